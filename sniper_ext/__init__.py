"""sniper_ext: SNIPER efficient multi-scale training and fast detection ops for PyTorch.

Importing the package loads the compiled ops into ``torch.ops.sniper``; the
Python wrappers with argument checks live in :mod:`sniper_ext.ops`.
"""

from ._loader import build_info as _read_build_info
from ._loader import load_libraries as _load_libraries

_load_libraries()

from . import ops  # noqa: E402  (needs the libraries loaded)

__version__: str = _read_build_info().get("version", "unknown")
__all__ = ["ops", "__version__"]
