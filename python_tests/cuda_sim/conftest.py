import os

import pytest
import torch

from . import build
from .sim import Sim, get_build

# Thread order between barriers (and block order) paired with a block-reduce
# combination order, so that three runs cover every value of both.
ORDERS = [("forward", "cub"), ("reverse", "sequential"), ("random", "random")]
SANITIZERS = os.environ.get("SNIPER_SIM_SANITIZERS", "") not in ("", "0")
FULL = os.environ.get("SNIPER_SIM_FULL", "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "sanitizer: cuda_sim runs under ASan/UBSan or TSan (SNIPER_SIM_SANITIZERS=1)")


def pytest_collection_modifyitems(config, items):
    if SANITIZERS:
        return
    skip = pytest.mark.skip(reason="cuda_sim sanitizer runs: set SNIPER_SIM_SANITIZERS=1")
    for item in items:
        if "sanitizer" in item.keywords:
            item.add_marker(skip)


def harness(mode="fiber", variant=None):
    """The built library, or a skip when this machine cannot build it."""
    try:
        return get_build(mode, variant)
    except build.Unavailable as e:
        pytest.skip(f"cuda_sim harness unavailable: {e}")


@pytest.fixture(params=[o for o, _ in ORDERS])
def sim(request):
    """A Sim in the order named by the parameter (all three unless a test
    parametrizes `sim` itself, e.g. with rotate())."""
    harness()
    order = request.param
    return Sim(order=order, reduce=dict(ORDERS)[order], seed=1234)


def rotate(values, ids=None):
    """Parameters (order, *value) for parametrize("sim, ...", indirect=["sim"]):
    each value once, the orders taking turns (value k gets order (k + k // 3) % 3,
    so that in a values list made of rows of 3, e.g. dtype x method, each
    method meets every order). With SNIPER_SIM_FULL=1: every value in every
    order. Thread order matters to synchronisation, which does not depend on the
    dtype, and every order still runs every test."""
    names = [o for o, _ in ORDERS]
    params = []
    for k, v in enumerate(values):
        for order in names if FULL else [names[(k + k // 3) % 3]]:
            params.append(
                pytest.param(order, *(v if isinstance(v, tuple) else (v,)), id=f"{order}-{ids(v) if ids else v}")
            )
    return params


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


def assert_bitwise(got: torch.Tensor, want: torch.Tensor, what: str = ""):
    """Same dtype, shape and bytes (so -0.0 != +0.0 and NaN == NaN of the same payload)."""
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.dtype, want.shape)
    if not torch.equal(bits(got), bits(want)):
        as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[got.element_size()]
        diff = got.contiguous().view(as_int) != want.contiguous().view(as_int)
        idx = diff.nonzero()[:5].tolist()
        raise AssertionError(
            f"{what}: {int(diff.sum())} of {got.numel()} elements differ, first at {idx}: "
            f"{[got[tuple(i)].item() for i in idx]} vs {[want[tuple(i)].item() for i in idx]}"
        )


class Unchanged:
    """Checks that the harness left its input tensors as they were."""

    def __init__(self, *tensors):
        self.tensors = [t for t in tensors if t is not None]
        self.copies = [t.clone() for t in self.tensors]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            for t, c in zip(self.tensors, self.copies):
                assert torch.equal(bits(t), bits(c)), "a kernel wrote into an input"
        return False
