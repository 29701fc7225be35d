"""pytest fixtures and hooks only; shared helpers and constants live in common_utils.py."""

import sniper_ext  # noqa: F401  (loads torch.ops.sniper before any test module is collected)
