"""OpTester: the tests every differentiable op gets, written once (after torchvision's RoIOpTester and
pytorch/extension-cpp's sample_inputs).

A subclass named ``Test*`` (so that pytest collects it) defines

* ``fn(*args, **kwargs)``: our op, through its public wrapper;
* ``expected_fn(*args, **kwargs)``: the independent plain-Python reference (python_tests/reference.py),
  called with the same arguments as float64 CPU tensors; returns a float64 tensor;
* ``sample_inputs(device, dtype)``: ``Sample``s (args, kwargs, a name for failure messages) whose
  tensors are on `device` in `dtype`; ``grad_args`` are the positions gradcheck differentiates;
* ``opcheck_calls(device, dtype)``: (raw op overload, args) pairs for torch.library.opcheck;

and may override ``tolerances``/``forward_tol``, ``cuda_tolerances``/``cuda_tol``, ``backward_inputs``
(what gradcheck runs on) and ``loss`` (what the backward tests backpropagate). It inherits
forward-vs-reference for every dtype and device, gradcheck in float64, gradients in every dtype,
opcheck, torch.compile(fullgraph=True) with backward, and CUDA-vs-CPU (forward and backward; skipped
without a GPU). Specific regression tests stay plain functions next to the class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from common_utils import ALL_DTYPES, DEVICES, requires_cuda


@dataclass
class Sample:
    args: tuple
    kwargs: dict = field(default_factory=dict)
    name: str = ""

    def to(self, device=None, dtype=None):
        def conv(v):
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                return v.to(device=device, dtype=dtype)
            return v.to(device=device) if isinstance(v, torch.Tensor) else v

        return Sample(tuple(conv(a) for a in self.args), {k: conv(v) for k, v in self.kwargs.items()}, self.name)


def _dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


class OpTester:
    dtypes = ALL_DTYPES
    grad_args: tuple = (0,)
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

    def forward_tol(self, dtype, want):
        """(rtol, atol) of the forward against the reference `want`."""
        return self.tolerances[dtype]

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

    def _leaves(self, args):
        args = [a.clone().requires_grad_() if i in self.grad_args and a is not None else a for i, a in enumerate(args)]
        return args, [args[i] for i in self.grad_args if args[i] is not None]

    def loss(self, out):
        """The scalar that test_backward_dtypes, test_compile and test_cuda_matches_cpu backpropagate."""
        return out.float().sum()

    def fn(self, *args, **kwargs):
        raise NotImplementedError

    def expected_fn(self, *args, **kwargs):
        raise NotImplementedError

    def sample_inputs(self, device, dtype):
        raise NotImplementedError

    def opcheck_calls(self, device, dtype):
        return []

    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("device", DEVICES)
    def test_forward(self, device, dtype):
        if dtype not in self.dtypes:
            pytest.skip(f"{type(self).__name__} does not take {dtype}")
        for s in self.sample_inputs(device, dtype):
            got = self.fn(*s.args, **s.kwargs)
            assert got.dtype == dtype and got.device.type == device, s.name
            d = s.to("cpu", torch.float64)  # the values the op saw, exactly
            want = self.expected_fn(*d.args, **d.kwargs)
            rtol, atol = self.forward_tol(dtype, want)
            torch.testing.assert_close(
                got.cpu().double(), want, rtol=rtol, atol=atol, msg=lambda m, n=s.name: f"{n}: {m}"
            )

    @pytest.mark.parametrize("device", DEVICES)
    def test_backward(self, device):
        for s in self.backward_inputs(device):
            args, leaves = self._leaves(s.args)

            def f(*xs, args=args, s=s):
                it = iter(xs)
                full = [next(it) if i in self.grad_args and a is not None else a for i, a in enumerate(args)]
                return self.fn(*full, **s.kwargs)

            # CUDA backward kernels sum with atomics: two runs may differ in the last bits.
            assert torch.autograd.gradcheck(f, leaves, nondet_tol=1e-10 if device == "cuda" else 0.0), s.name

    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("device", DEVICES)
    def test_backward_dtypes(self, device, dtype):
        """In every dtype the gradients come back in the input's dtype and finite."""
        if dtype not in self.dtypes:
            pytest.skip(f"{type(self).__name__} does not take {dtype}")
        for s in self.sample_inputs(device, dtype):
            args, leaves = self._leaves(s.args)
            self.loss(self.fn(*args, **s.kwargs)).backward()
            for v in leaves:
                assert v.grad.dtype == dtype and torch.isfinite(v.grad.float()).all(), s.name

    @pytest.mark.parametrize("device", DEVICES)
    def test_opcheck(self, device):
        calls = self.opcheck_calls(device, torch.float32)
        assert calls, "no opcheck calls"
        for op, args in calls:
            torch.library.opcheck(op, args)

    def test_compile(self):
        """torch.compile(fullgraph=True) gives eager's output and, through the registered autograd, its gradients."""
        for s in self.compile_inputs():
            torch._dynamo.reset()
            compiled = torch.compile(lambda *a, s=s: self.loss(self.fn(*a, **s.kwargs)), fullgraph=True)
            results = []
            for f in (compiled, lambda *a, s=s: self.loss(self.fn(*a, **s.kwargs))):
                args, leaves = self._leaves(s.args)
                out = f(*args)
                out.backward()
                results.append([out] + [v.grad for v in leaves])
            for got, want in zip(*results):
                torch.testing.assert_close(got, want, msg=lambda m, n=s.name: f"{n}: {m}")

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
                args, leaves = self._leaves(t.args)
                out = self.fn(*args, **t.kwargs)
                self.loss(out).backward()
                outs.append(out.cpu())
                grads.append([v.grad.cpu() for v in leaves])
            torch.testing.assert_close(outs[1], outs[0], rtol=rtol, atol=atol, msg=lambda m, n=s.name: f"{n}: {m}")
            for gc, gg in zip(grads[0], grads[1]):
                torch.testing.assert_close(gg, gc, rtol=grtol, atol=gatol, msg=lambda m, n=s.name: f"{n}: {m}")
