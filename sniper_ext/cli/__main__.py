"""``python -m sniper_ext.cli``: the `sniper` command (also under ``torchrun -m sniper_ext.cli``)."""

import sys

from sniper_ext.cli import main

sys.exit(main())
