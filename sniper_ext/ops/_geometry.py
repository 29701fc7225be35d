"""Output geometry of the raw ops: one function per op (``<op>_geometry`` in its family's module) takes
the raw op's arguments (``torch.ops.sniper.<op>``), checks the shapes, dtypes and devices its outputs
depend on, and returns the outputs' shapes and dtypes. The op's fake kernel (``torch.compile``, meta
tensors) is made from it by :func:`register_fake`, and the wrapper calls it for the same checks, so
each op's output shapes are written down once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["DYNAMIC", "GEOMETRIES", "Out", "register_fake"]

#: A data-dependent size in an output shape (the number of kept boxes, of chips): one size per call,
#: shared by every output that has it.
DYNAMIC = "dynamic"


@dataclass(frozen=True)
class Out:
    """One output of an op: its shape (ints or :data:`DYNAMIC`) and dtype."""

    shape: tuple
    dtype: torch.dtype


Geometry = Callable[..., "Out | tuple[Out, ...]"]

#: The geometry function of every raw op, by name (without the ``sniper::`` namespace).
GEOMETRIES: dict[str, Geometry] = {}


def register_fake(op: str, geometry: Geometry) -> Geometry:
    """Registers the fake kernel of ``sniper::<op>``: uninitialised outputs shaped as ``geometry`` says,
    on the device of the op's first tensor argument. Returns ``geometry``."""

    def fake(*args):
        outs = geometry(*args)
        like = next(a for a in args if isinstance(a, torch.Tensor))
        dynamic: list = []  # the call's data-dependent size, made on first use

        def make(o: Out) -> torch.Tensor:
            if not dynamic and any(s is DYNAMIC for s in o.shape):
                dynamic.append(torch.library.get_ctx().new_dynamic_size())
            return like.new_empty(tuple(dynamic[0] if s is DYNAMIC else s for s in o.shape), dtype=o.dtype)

        return tuple(make(o) for o in outs) if isinstance(outs, tuple) else make(outs)

    fake.__name__ = fake.__qualname__ = f"{op}_fake"
    torch.library.register_fake(f"sniper::{op}")(fake)
    GEOMETRIES[op] = geometry
    return geometry
