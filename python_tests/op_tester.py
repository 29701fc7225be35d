"""OpTester: the tests every differentiable op gets, written once (after torchvision's RoIOpTester and
pytorch/extension-cpp's sample_inputs).

A subclass named ``Test*`` (so that pytest collects it) defines

* ``fn(*args, **kwargs)``: our op, through its public wrapper;
* ``expected_fn(*args, **kwargs)``: the independent plain-Python reference (python_tests/reference.py),
  called with the same arguments as float64 CPU tensors; returns a float64 tensor;
* ``sample_inputs(device, dtype)``: ``Sample``s (args, kwargs, a name for failure messages) whose
  tensors are on `device` in `dtype`; ``grad_args`` are the positions gradcheck differentiates;
* ``opcheck_calls(device, dtype)``: (raw op overload, args) pairs for torch.library.opcheck;

and inherits forward-vs-reference for every dtype and device, gradcheck in float64, opcheck,
torch.compile(fullgraph=True) and CUDA-vs-CPU (forward and backward; skipped without a GPU). Specific
regression tests stay plain functions next to the class.
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
    tolerances = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 4e-5), torch.float16: (1e-2, 4e-2),
                  torch.bfloat16: (5e-2, 2e-1)}
    # CUDA against CPU, forward and gradients (atomics reorder the sums).
    cuda_tolerances = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
    cuda_grad_tol_factor = 1  # gradients against CPU: cuda_tolerances times this

    def loss(self, out):
        """What test_cuda_matches_cpu backpropagates."""
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
        rtol, atol = self.tolerances[dtype]
        for s in self.sample_inputs(device, dtype):
            got = self.fn(*s.args, **s.kwargs)
            assert got.dtype == dtype and got.device.type == device, s.name
            d = s.to("cpu", torch.float64)  # the values the op saw, exactly
            want = self.expected_fn(*d.args, **d.kwargs)
            torch.testing.assert_close(got.cpu().double(), want, rtol=rtol, atol=atol, msg=lambda m: f"{s.name}: {m}")

    @pytest.mark.parametrize("device", DEVICES)
    def test_backward(self, device):
        for s in self.sample_inputs(device, torch.float64):
            args = [a.clone().requires_grad_() if i in self.grad_args and a is not None else a
                    for i, a in enumerate(s.args)]
            leaves = [args[i] for i in self.grad_args if args[i] is not None]

            def f(*xs, args=args, s=s):
                it = iter(xs)
                full = [next(it) if i in self.grad_args and a is not None else a for i, a in enumerate(args)]
                return self.fn(*full, **s.kwargs)

            # CUDA backward kernels sum with atomics: two runs may differ in the last bits.
            assert torch.autograd.gradcheck(f, leaves, nondet_tol=1e-10 if device == "cuda" else 0.0), s.name

    @pytest.mark.parametrize("device", DEVICES)
    def test_opcheck(self, device):
        calls = self.opcheck_calls(device, torch.float32)
        assert calls, "no opcheck calls"
        for op, args in calls:
            torch.library.opcheck(op, args)

    def test_compile(self):
        """torch.compile(fullgraph=True) gives eager's output and, through the registered autograd, its gradients."""
        s = next(iter(self.sample_inputs("cpu", torch.float32)))
        torch._dynamo.reset()
        compiled = torch.compile(lambda *a: self.loss(self.fn(*a, **s.kwargs)), fullgraph=True)
        results = []
        for f in (compiled, lambda *a: self.loss(self.fn(*a, **s.kwargs))):
            args = [a.clone().requires_grad_() if i in self.grad_args and a is not None else a
                    for i, a in enumerate(s.args)]
            out = f(*args)
            out.backward()
            results.append([out] + [args[i].grad for i in self.grad_args if args[i] is not None])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want)

    @requires_cuda
    @pytest.mark.parametrize("dtype", ALL_DTYPES, ids=_dtype_id)
    def test_cuda_matches_cpu(self, dtype):
        if dtype not in self.dtypes:
            pytest.skip(f"{type(self).__name__} does not take {dtype}")
        tol = self.cuda_tolerances[dtype]
        gtol = tol * self.cuda_grad_tol_factor
        for s in self.sample_inputs("cpu", dtype):
            outs, grads = [], []
            for d in ("cpu", "cuda"):
                t = s.to(d)
                args = [a.clone().requires_grad_() if i in self.grad_args and a is not None else a
                        for i, a in enumerate(t.args)]
                out = self.fn(*args, **t.kwargs)
                self.loss(out).backward()
                outs.append(out.cpu())
                grads.append([args[i].grad.cpu() for i in self.grad_args if args[i] is not None])
            torch.testing.assert_close(outs[1], outs[0], rtol=tol, atol=tol, msg=lambda m: f"{s.name}: {m}")
            for gc, gg in zip(grads[0], grads[1]):
                torch.testing.assert_close(gg, gc, rtol=gtol, atol=gtol, msg=lambda m: f"{s.name}: {m}")
