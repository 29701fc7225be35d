"""OpTester: the tests every op gets from its spec, written once (after torchvision's test_ops.py and
pytorch/extension-cpp's sample_inputs).

An op's spec is a subclass named ``Test*`` (so that pytest collects it) in its family's test file. It
defines

* ``fn(*args, **kwargs)``: the op, through its public wrapper (``sniper_ext.ops``);
* ``expected_fn(*args, **kwargs)``: the independent plain-Python reference (python_tests/reference.py),
  called with the same arguments as CPU tensors whose floating ones are float64; returns a tensor or a
  tuple of them;
* ``sample_inputs(device, dtype)``: ``Sample``s (args, kwargs, a name for failure messages) whose
  floating tensors are in `dtype`, all on `device` (with empty and degenerate inputs, and an expanded
  one where the op takes one naturally);
* ``raw_calls(sample)``: the (raw op overload, args) pairs the wrapper makes for a sample: the opcheck
  list (``opcheck_calls``), and the check of every output's shape and dtype against the op's geometry
  function (``sniper_ext.ops._geometry``);
* ``fuzz_targets`` and ``fuzz_args(ctx, target)``: a random valid call of each fuzz target
  (``python_tests/fuzz/cases.py`` mutates them; ``test_random_calls`` checks the wrapper's against the
  reference);

and may set ``exact`` (outputs compared exactly: indices, labels, chips; a tuple: per output),
``grad_args`` (the positions gradcheck differentiates; empty: not differentiable), ``output_dtypes``,
``tolerances``/``forward_tol``, ``check_forward`` (e.g. a looser rule for half types),
``cuda_tolerances``/``cuda_tol``, ``backward_inputs``, ``compile_inputs``, ``opcheck_calls`` and
``loss``.

It inherits: forward against the reference for every dtype and device, on every sample and on
non-contiguous copies of it (``sliced``: every stride doubled, ``transposed``: the memory order of
every tensor of two or more dimensions reversed), which must give the contiguous result exactly;
random valid calls against the reference; for differentiable ops gradcheck in float64, gradients in
every dtype, and the same gradients from non-contiguous inputs; opcheck; the outputs' geometry;
torch.compile(fullgraph=True), with backward when differentiable; CUDA against CPU (forward and
backward; skipped without a GPU). Specific regression tests stay plain functions next to the spec.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import torch
from common_utils import ALL_DTYPES, DEVICES, requires_cuda
from fuzz.values import Ctx

from sniper_ext.ops._geometry import DYNAMIC, GEOMETRIES

#: Every spec (OpTester subclass) defined so far, in definition order: the opcheck coverage test and the
#: fuzz cases import the test modules and go through them.
SPECS: list[type[OpTester]] = []


def _garbage(t: torch.Tensor):
    """A value that shows when a kernel reads it instead of an element of `t`."""
    return float("nan") if t.is_floating_point() else 123


def sliced(t: torch.Tensor) -> torch.Tensor:
    """`t`'s values in a view whose every stride is doubled (the elements in between hold garbage)."""
    if t.dim() == 0:
        return t
    big = torch.full((*t.shape, 2), _garbage(t), dtype=t.dtype, device=t.device)
    big[..., 0] = t
    return big[..., 0]


def transposed(t: torch.Tensor) -> torch.Tensor:
    """`t`'s values with the memory order of its dimensions reversed (column-major)."""
    if t.dim() < 2:
        return t
    perm = list(reversed(range(t.dim())))
    return t.permute(perm).contiguous().permute(perm)


def _copy_strided(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` with its strides (clone() makes a sliced tensor contiguous); an expanded tensor
    (overlapping memory) becomes contiguous."""
    if any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape)):
        return t.contiguous().clone()
    out = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
    return out.copy_(t)


@dataclass
class Sample:
    args: tuple
    kwargs: dict = field(default_factory=dict)
    name: str = ""

    def map(self, f, name=None):
        """The sample with `f` applied to every tensor argument."""

        def conv(v):
            return f(v) if isinstance(v, torch.Tensor) else v

        args = tuple(conv(a) for a in self.args)
        return Sample(args, {k: conv(v) for k, v in self.kwargs.items()}, self.name if name is None else name)

    def to(self, device=None, dtype=None):
        """Floating tensors to `dtype`, every tensor to `device`."""
        return self.map(lambda v: v.to(device=device, dtype=dtype if v.is_floating_point() else None))

    def noncontiguous(self):
        """[(kind, the sample with non-contiguous copies of its tensors)], for the kinds that change one."""
        out = []
        for kind, f in (("sliced", sliced), ("transposed", transposed)):
            changed = [v for v in (*self.args, *self.kwargs.values()) if isinstance(v, torch.Tensor) and f(v) is not v]
            if any(v.numel() > 1 for v in changed):
                out.append((kind, self.map(f, f"{self.name}, {kind}")))
        return out


def _cuda_sim():
    """A Sim of the cuda_sim harness in random orders, or a skip where it cannot be built (no g++ or no
    CUDA headers)."""
    from cuda_sim.build import Unavailable
    from cuda_sim.sim import Sim

    try:
        return Sim(order="random", reduce="random", seed=7)
    except Unavailable as e:
        pytest.skip(f"cuda_sim harness unavailable: {e}")


def _dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def assert_identical(got, want, what=""):
    """Same outputs: dtypes, shapes and values (NaN where NaN)."""
    got, want = _as_tuple(got), _as_tuple(want)
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, (what, i, g.dtype, g.shape, w.dtype, w.shape)
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True, msg=lambda m, i=i: f"{what} output {i}: {m}")


class OpTester:
    dtypes = ALL_DTYPES
    grad_args: tuple = (0,)
    #: Outputs compared exactly with the reference (and CUDA with the CPU): True, False, or one per output.
    exact: bool | tuple = False
    #: Fuzz targets (fuzz/cases.py) whose valid calls fuzz_args builds; the first "ops." one is the wrapper.
    fuzz_targets: tuple = ()
    #: Random valid calls test_random_calls checks against the reference.
    random_calls = 8
    #: The names of the samples test_opcheck runs (empty: the first sample).
    opcheck_samples: tuple = ()
    # (rtol, atol) of forward against the float64 reference, per dtype.
    tolerances = {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1e-5, 4e-5),
        torch.float16: (1e-2, 4e-2),
        torch.bfloat16: (5e-2, 2e-1),
    }
    # CUDA against CPU, forward and gradients (atomics reorder the sums).
    cuda_tolerances = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
    cuda_grad_tol_factor = 1  # gradients against CPU: cuda_tolerances times this

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        SPECS.append(cls)

    # -- what a spec defines --------------------------------------------------------------------------

    def fn(self, *args, **kwargs):
        raise NotImplementedError

    def expected_fn(self, *args, **kwargs):
        raise NotImplementedError

    def sample_inputs(self, device, dtype):
        raise NotImplementedError

    def raw_calls(self, sample: Sample) -> list:
        """The (raw op overload, args) pairs the wrapper makes for `sample`."""
        raise NotImplementedError

    def fuzz_args(self, ctx: Ctx, target: str) -> list:
        """A random valid call of fuzz target `target` (fuzz.values.Arg list), values from `ctx`."""
        raise NotImplementedError

    def output_dtypes(self, dtype) -> tuple:
        """The dtypes of the wrapper's outputs for inputs of `dtype`."""
        return (dtype,)

    def forward_tol(self, dtype, want):
        """(rtol, atol) of the forward against the reference `want`."""
        return self.tolerances[dtype]

    def check_forward(self, got, want, dtype, name):
        """The op's outputs `got` (inputs in `dtype`) against the reference's `want`."""
        got, want = _as_tuple(got), _as_tuple(want)
        assert len(got) == len(want), name
        exact = self.exact if isinstance(self.exact, tuple) else (self.exact,) * len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            g = g.cpu()
            if exact[i]:
                assert g.shape == w.shape and torch.equal(g.to(w.dtype), w), (
                    f"{name}: output {i} differs from the reference:\n{g.tolist()}\n!=\n{w.tolist()}"
                )
            else:
                rtol, atol = self.forward_tol(dtype, want[0] if len(want) == 1 else want)
                torch.testing.assert_close(
                    g.double(), w, rtol=rtol, atol=atol, msg=lambda m, i=i: f"{name}: output {i}: {m}"
                )

    def cuda_tol(self, dtype):
        """(rtol, atol) of the CUDA output and (rtol, atol) of the CUDA gradients against CPU."""
        t = self.cuda_tolerances[dtype]
        return (t, t), (t * self.cuda_grad_tol_factor, t * self.cuda_grad_tol_factor)

    def backward_inputs(self, device):
        """The float64 samples gradcheck runs on (by default every sample)."""
        return self.sample_inputs(device, torch.float64)

    def compile_inputs(self):
        """The float32 CPU samples test_compile runs on (by default the first sample)."""
        return [next(iter(self.sample_inputs("cpu", torch.float32)))]

    def opcheck_calls(self, device, dtype):
        """The (raw op overload, args) pairs test_opcheck runs: those of the samples named in
        `opcheck_samples` (by default the first sample); with float64 the differentiable arguments
        require grad, so that the autograd registration is checked too."""
        samples = list(self.sample_inputs(device, dtype))
        if self.opcheck_samples:
            samples = [s for s in samples if s.name in self.opcheck_samples]
            assert len(samples) == len(self.opcheck_samples), "a name in opcheck_samples names no sample"
        calls = []
        for s in samples[:1] if not self.opcheck_samples else samples:
            if dtype == torch.float64 and self.grad_args:
                s = Sample(self._leaves(s.args)[0], s.kwargs, s.name)
            calls += self.raw_calls(s)
        return calls

    def loss(self, out):
        """The scalar that test_backward_dtypes, test_compile and test_cuda_matches_cpu backpropagate."""
        return out.float().sum()

    # -- helpers --------------------------------------------------------------------------------------

    def _leaves(self, args):
        args = [
            _copy_strided(a).requires_grad_() if i in self.grad_args and a is not None else a
            for i, a in enumerate(args)
        ]
        return tuple(args), [args[i] for i in self.grad_args if args[i] is not None]

    def _run_backward(self, s):
        """[output, gradient of each differentiable argument] of loss(fn(sample))."""
        args, leaves = self._leaves(s.args)
        out = self.fn(*args, **s.kwargs)
        self.loss(out).backward()
        return [out.detach()] + [v.grad for v in leaves]

    def _check_output_dtypes(self, got, dtype, device, name):
        got = _as_tuple(got)
        assert tuple(g.dtype for g in got) == tuple(self.output_dtypes(dtype)), name
        assert all(g.device.type == device for g in got), name

    def _require_grad(self):
        if not self.grad_args:
            pytest.skip(f"{type(self).__name__}: not differentiable")

    # -- the tests -----------------------------------------------------------------------------------

    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("device", DEVICES)
    def test_forward(self, device, dtype):
        """Every sample against the reference, and its non-contiguous copies exactly like it."""
        if dtype not in self.dtypes:
            pytest.skip(f"{type(self).__name__} does not take {dtype}")
        for s in self.sample_inputs(device, dtype):
            got = self.fn(*s.args, **s.kwargs)
            self._check_output_dtypes(got, dtype, device, s.name)
            d = s.to("cpu", torch.float64)  # the values the op saw, exactly
            self.check_forward(got, self.expected_fn(*d.args, **d.kwargs), dtype, s.name)
            for _kind, v in s.noncontiguous():
                assert_identical(self.fn(*v.args, **v.kwargs), got, v.name)

    def test_random_calls(self):
        """Random valid calls (those the fuzz cases start from), float64 on the CPU, against the reference."""
        target = next((t for t in self.fuzz_targets if t.startswith("ops.")), None)
        if target is None:
            pytest.skip(f"{type(self).__name__}: no wrapper fuzz target")
        for k in range(self.random_calls):
            ctx = Ctx(random.Random(f"{type(self).__name__}:{k}"), device="cpu", dtype=torch.float64)
            args = self.fuzz_args(ctx, target)
            s = Sample(
                tuple(a.value for a in args if not a.keyword),
                {a.name: a.value for a in args if a.keyword},
                f"random call {k}",
            )
            self.check_forward(
                self.fn(*s.args, **s.kwargs), self.expected_fn(*s.args, **s.kwargs), torch.float64, s.name
            )

    @pytest.mark.parametrize("device", DEVICES)
    def test_backward(self, device):
        self._require_grad()
        for s in self.backward_inputs(device):
            args, leaves = self._leaves(s.args)

            def f(*xs, args=args, s=s):
                it = iter(xs)
                full = [next(it) if i in self.grad_args and a is not None else a for i, a in enumerate(args)]
                return self.fn(*full, **s.kwargs)

            # CUDA backward kernels sum with atomics: two runs may differ in the last bits.
            assert torch.autograd.gradcheck(f, leaves, nondet_tol=1e-10 if device == "cuda" else 0.0), s.name

    @pytest.mark.parametrize("device", DEVICES)
    def test_backward_noncontiguous(self, device):
        """Non-contiguous inputs give the gradients of contiguous ones, exactly (CPU; CUDA to rounding)."""
        self._require_grad()
        for s in self.backward_inputs(device):
            want = self._run_backward(s)
            for _kind, v in s.noncontiguous():
                got = self._run_backward(v)
                if device == "cpu":
                    assert_identical(got, want, v.name)
                else:
                    for g, w in zip(got, want):
                        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m, n=v.name: f"{n}: {m}")

    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("device", DEVICES)
    def test_backward_dtypes(self, device, dtype):
        """In every dtype the gradients come back in the input's dtype and finite."""
        self._require_grad()
        if dtype not in self.dtypes:
            pytest.skip(f"{type(self).__name__} does not take {dtype}")
        for s in self.sample_inputs(device, dtype):
            args, leaves = self._leaves(s.args)
            self.loss(self.fn(*args, **s.kwargs)).backward()
            for v in leaves:
                assert v.grad.dtype == dtype and torch.isfinite(v.grad.float()).all(), s.name

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=_dtype_id)
    @pytest.mark.parametrize("device", DEVICES)
    def test_opcheck(self, device, dtype):
        calls = self.opcheck_calls(device, dtype)
        assert calls, "no opcheck calls"
        for op, args in calls:
            torch.library.opcheck(op, args)

    @pytest.mark.parametrize("device", DEVICES)
    def test_geometry(self, device):
        """The raw ops' outputs have the shapes and dtypes their geometry functions (and so their fake
        kernels) give, on every sample and every dtype."""
        for dtype in self.dtypes:
            for s in self.sample_inputs(device, dtype):
                for op, args in self.raw_calls(s):
                    geometry = GEOMETRIES[op.name().removeprefix("sniper::")](*args)
                    got = _as_tuple(op(*args))
                    want = _as_tuple(geometry)
                    assert len(got) == len(want), (s.name, op)
                    for g, w in zip(got, want):
                        assert g.dtype == w.dtype, (s.name, op, g.dtype, w.dtype)
                        assert g.dim() == len(w.shape), (s.name, op, tuple(g.shape), w.shape)
                        assert all(a == b for a, b in zip(g.shape, w.shape) if b is not DYNAMIC), (
                            s.name,
                            op,
                            tuple(g.shape),
                            w.shape,
                        )

    def test_compile(self):
        """torch.compile(fullgraph=True) gives eager's outputs and, through the registered autograd, its
        gradients."""
        for s in self.compile_inputs():
            torch._dynamo.reset()
            if not self.grad_args:
                compiled = torch.compile(lambda *a, s=s: self.fn(*a, **s.kwargs), fullgraph=True)
                assert_identical(compiled(*s.args), self.fn(*s.args, **s.kwargs), s.name)
                continue
            compiled = torch.compile(lambda *a, s=s: self.loss(self.fn(*a, **s.kwargs)), fullgraph=True)
            results = []
            for f in (compiled, lambda *a, s=s: self.loss(self.fn(*a, **s.kwargs))):
                args, leaves = self._leaves(s.args)
                out = f(*args)
                out.backward()
                results.append([out] + [v.grad for v in leaves])
            for got, want in zip(*results):
                torch.testing.assert_close(got, want, msg=lambda m, n=s.name: f"{n}: {m}")

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=_dtype_id)
    def test_cuda_sim(self, dtype):
        """The CUDA registrations and kernels, run on the CPU by the cuda_sim harness (python_tests/cuda_sim,
        random thread and reduction orders), give the CPU op's outputs on every sample and its
        non-contiguous copies: exactly where the op promises it, else to cuda_tol."""
        sim = _cuda_sim()
        (rtol, atol), _ = self.cuda_tol(dtype)
        for s in self.sample_inputs("cpu", dtype):
            for v in [s] + [v for _kind, v in s.noncontiguous()]:
                for op, args in self.raw_calls(v):
                    name = op.name().removeprefix("sniper::")
                    got, want = _as_tuple(sim.op(name, *args)), _as_tuple(op(*args))
                    exact = self.exact if isinstance(self.exact, tuple) else (self.exact,) * len(want)
                    for i, (g, w) in enumerate(zip(got, want)):
                        what = f"{v.name}: {name} output {i}"
                        if exact[i] if i < len(exact) else exact[0]:
                            assert_identical(g, w, what)
                        else:
                            torch.testing.assert_close(
                                g, w, rtol=rtol, atol=atol, msg=lambda m, what=what: f"{what}: {m}"
                            )

    @requires_cuda
    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
    def test_cuda_matches_cpu(self, dtype):
        if dtype not in self.dtypes:
            pytest.skip(f"{type(self).__name__} does not take {dtype}")
        (rtol, atol), (grtol, gatol) = self.cuda_tol(dtype)
        for s in self.sample_inputs("cpu", dtype):
            outs, grads = [], []
            for d in ("cpu", "cuda"):
                t = s.to(d)
                if self.grad_args:
                    out, *g = self._run_backward(t)
                else:
                    out, g = self.fn(*t.args, **t.kwargs), []
                outs.append(tuple(o.cpu() for o in _as_tuple(out)))
                grads.append([v.cpu() for v in g])
            exact = self.exact if isinstance(self.exact, tuple) else (self.exact,) * len(outs[0])
            for i, (oc, og) in enumerate(zip(*outs)):
                if exact[i]:
                    assert_identical(og, oc, f"{s.name}: output {i}")
                else:
                    torch.testing.assert_close(og, oc, rtol=rtol, atol=atol, msg=lambda m, n=s.name: f"{n}: {m}")
            for gc, gg in zip(grads[0], grads[1]):
                torch.testing.assert_close(gg, gc, rtol=grtol, atol=gatol, msg=lambda m, n=s.name: f"{n}: {m}")
