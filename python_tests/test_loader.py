"""The library loader: CUDA kernels are loaded when they can be, and a GPU user is told why not."""

import subprocess
import sys

import pytest
import torch

from sniper_ext import _loader, info


@pytest.fixture
def fresh_state(monkeypatch):
    """A loader that has loaded nothing yet (the real libraries stay loaded in torch)."""
    monkeypatch.setattr(_loader, "_STATE", {"cpu": None, "cuda": None, "cuda_error": None})
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    monkeypatch.delenv(_loader.ALLOW_CPU_ONLY_ENV, raising=False)


def test_cpu_torch_never_touches_cuda(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert _loader._load_cuda("/nonexistent/_C_cuda.so") is None
    assert _loader._load_cuda(None) is None


def test_missing_cuda_library_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert "built without its CUDA kernels" in _loader._load_cuda(None)


def test_cuda_major_mismatch_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(_loader, "build_info", lambda: {"cuda_version": "13.0"})
    problem = _loader._load_cuda("/some/_C_cuda.so")
    assert "built with CUDA 13.0" in problem and "uses CUDA 12.8" in problem


def test_load_failure_is_reported(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(_loader, "build_info", lambda: {"cuda_version": "13.0"})

    def fail(path):
        raise OSError("undefined symbol: foo")

    monkeypatch.setattr(torch.ops, "load_library", fail)
    assert "undefined symbol: foo" in _loader._load_cuda("/some/_C_cuda.so")


def test_gpu_without_cuda_kernels_raises(fresh_state, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_loader, "_find", lambda stem: "/x/_C.so" if stem == "_C" else None)
    with pytest.raises(ImportError, match="built without its CUDA kernels.*SNIPER_EXT_ALLOW_CPU_ONLY"):
        _loader.load_libraries()


def test_gpu_without_cuda_kernels_can_be_allowed(fresh_state, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_loader, "_find", lambda stem: "/x/_C.so" if stem == "_C" else None)
    monkeypatch.setenv(_loader.ALLOW_CPU_ONLY_ENV, "1")
    with pytest.warns(UserWarning, match="CPU kernels only"):
        _loader.load_libraries()
    assert _loader.library_paths()["cuda_error"]


def test_no_gpu_only_warns(fresh_state, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(_loader, "_find", lambda stem: "/x/_C.so" if stem == "_C" else None)
    with pytest.warns(UserWarning, match="CUDA kernels not loaded"):
        _loader.load_libraries()


def test_require_cuda_fails_without_cuda_kernels():
    if _loader.library_paths()["cuda"] is not None:
        pytest.skip("the CUDA kernels are loaded here")
    out = subprocess.run([sys.executable, "-m", "sniper_ext.info", "--require-cuda"], capture_output=True, text=True)
    assert out.returncode == 1 and "CUDA kernels required" in out.stderr


def test_require_cuda_passes_with_cuda_kernels():
    if _loader.library_paths()["cuda"] is None:
        pytest.skip("no CUDA kernels loaded here")
    assert info.ops_without("CUDA") == []
