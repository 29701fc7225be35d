"""pytest fixtures and hooks only; shared helpers and constants live in common_utils.py."""

import os
import shutil
import tempfile

import sniper_ext  # noqa: F401  (loads torch.ops.sniper before any test module is collected)

# The dataset index cache (sniper_ext.data.index) of this test session: a fresh folder, removed at
# the end, never the user's ~/.cache. Set before any test runs, so that subprocesses inherit it.
if "SNIPER_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="sniper-test-cache-")
    os.environ["SNIPER_CACHE_DIR"] = _CACHE
else:
    _CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)
