"""Fuzzing: every sniper op survives hostile input with a clear error.

Every raw op (``torch.ops.sniper.*``), every wrapper in ``sniper_ext.ops`` and every module in
``sniper_ext.nn`` (32 targets; ``fuzz/cases.py``) is called with seeded random inputs: a valid call
(small sizes, often an empty dimension, every floating dtype, forward and, for differentiable
targets, backward) with zero to two hostile mutations: wrong dtypes, ranks, sizes, layouts and
devices (meta; CUDA against CPU when there is a GPU), None, lists, NaN/inf/huge/negative/zero values,
out-of-range indices and labels, inverted and degenerate boxes, bad canvases and valid ranges,
0/-1/2**40/2**62/NaN/inf/1e300/10**400/strings for numbers, and each target's own limit probes
(outputs of >= 2**42 elements from cheap expanded inputs, 1e9-pixel canvases, overflowing geometry).

Acceptance rule, per call (``fuzz.cases.judge``):

1. The call returns, every floating output (and gradient) is finite when every floating input was
   finite and moderate (the generator tracks it: NaN/inf, values >= 1e15, and the limit probes turn
   it off), and the target's post-conditions hold (kept indices unique and in range, labels in
   {-1, 0, 1}, chip and group ids in range, output shapes as documented); or
2. it raises ValueError, TypeError, IndexError or RuntimeError (or a subclass) whose message, after
   the "function, file:line, " prefix of a C++ check, starts with "<name>:" (our checks), or that
   names "sniper::<name>" (the dispatcher's own errors about the op: a schema mismatch, no tensor
   argument at all, meta tensors for a data-dependent output), where <name> is the target's op (for
   a module: the module's class or the op it wraps).

Anything else fails the case: another exception type (ZeroDivisionError, OverflowError,
AssertionError, ...), a message that does not name the op, a crash of the process (signal, abort,
heap corruption), or no result within the per-call timeout (a hang). Each batch of calls runs in a
child process that announces every case before calling it, so a crash or a hang reports exactly that
case, and a fresh child resumes with the next one (``fuzz/runner.py``). Children cap their address
space (CPU-only), so a runaway allocation fails in the child, not on the machine.

Environment (the defaults take ~1-2 minutes on 2 quiet cores):

* ``SNIPER_FUZZ_CALLS``: cases to run (default 3000; the cases of a seed never change, so a
  longer run extends a shorter one);
* ``SNIPER_FUZZ_SECONDS``: stop starting new cases after this many seconds (default: no limit; alone,
  it runs cases until the time is up);
* ``SNIPER_FUZZ_SEED``: the run's seed (default 0);
* ``SNIPER_FUZZ_ONLY``: a regex on target names, e.g. ``anchors`` or ``^raw\\.``;
* ``SNIPER_FUZZ_WORKERS`` / ``SNIPER_FUZZ_THREADS``: child processes at once (default 2) and torch
  threads in each (default 1);
* ``SNIPER_FUZZ_CALL_TIMEOUT``: seconds one call may take (default 20);
* ``SNIPER_FUZZ_MEMORY_GB``: a child's address-space cap (default 6; 0: none; never with CUDA).

Replay a reported case in-process, with its traceback: ``cd python_tests && python -m fuzz.runner
--seed S --case I``; a longer run from the command line: ``python -m fuzz.runner --count 20000
--workers 2 --stats``.
"""

import os
import re

import pytest
import torch
from fuzz import runner
from fuzz.cases import TARGETS, make_case

import sniper_ext.nn
import sniper_ext.ops

#: The RoI pooling ops (roi_align, deform_roi_pool, their backward ops and modules) are being fixed
#: separately: while True their fuzz failures are reported but xfail. Flip to False when the fixes land.
ROI_FUZZ_PENDING = False

SECONDS = float(os.environ["SNIPER_FUZZ_SECONDS"]) if os.environ.get("SNIPER_FUZZ_SECONDS") else None
CALLS = int(os.environ.get("SNIPER_FUZZ_CALLS", "3000" if SECONDS is None else "100000000"))
SEED = int(os.environ.get("SNIPER_FUZZ_SEED", "0"))
ONLY = os.environ.get("SNIPER_FUZZ_ONLY") or None
WORKERS = int(os.environ.get("SNIPER_FUZZ_WORKERS", "2"))
THREADS = int(os.environ.get("SNIPER_FUZZ_THREADS", "1"))
CALL_TIMEOUT = float(os.environ.get("SNIPER_FUZZ_CALL_TIMEOUT", "20"))
#: While RoI fixes are pending, their (known) hangs are cut short so they do not dominate the run.
PENDING_TIMEOUT = 1.5

ROI_TARGETS = {name for name, t in TARGETS.items() if t.roi}


@pytest.fixture(scope="module")
def records():
    timeouts = {t: min(PENDING_TIMEOUT, CALL_TIMEOUT) for t in ROI_TARGETS} if ROI_FUZZ_PENDING else {}
    return runner.run(
        SEED,
        CALLS,
        workers=WORKERS,
        threads=THREADS,
        call_timeout=CALL_TIMEOUT,
        target_timeouts=timeouts,
        seconds=SECONDS,
        only=ONLY,
    )


def _report(fails, limit=40):
    lines = [
        f"{len(fails)} fuzz failures (seed {SEED}; replay one with "
        f"`cd python_tests && python -m fuzz.runner --seed {SEED} --case I`):"
    ]
    for r in fails[:limit]:
        lines.append(f"[{r['index']}] {r['desc'][:400]}\n    -> {r['detail'][:500]}")
    if len(fails) > limit:
        lines.append(f"... and {len(fails) - limit} more")
    return "\n".join(lines)


def test_every_op_and_module_is_a_target():
    raw = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("sniper::")}
    wrappers = {n for n in sniper_ext.ops.__all__ if callable(getattr(sniper_ext.ops, n))}
    modules = set(sniper_ext.nn.__all__)
    from sniper_ext.modeling import anchors, box_coder, proposals

    target_code = {n for m in (anchors, box_coder, proposals) for n in m.__all__ if callable(getattr(m, n))}
    assert {n.split(".", 1)[1] for n in TARGETS if n.startswith("raw.")} == raw
    assert {n.split(".", 1)[1] for n in TARGETS if n.startswith("ops.")} == wrappers
    assert {n.split(".", 1)[1] for n in TARGETS if n.startswith("nn.")} == modules
    assert {n.split(".", 1)[1] for n in TARGETS if n.startswith("modeling.")} == target_code


def test_cases_are_deterministic():
    for i in (0, 1, 777, 12345):
        assert make_case(SEED, i).describe() == make_case(SEED, i).describe()
    assert make_case(SEED, 5).describe() != make_case(SEED + 1, 5).describe()


def test_fuzz_ran_every_target(records):
    assert records, "no fuzz case ran"
    if ONLY is None and SECONDS is None and CALLS >= 4 * len(TARGETS):
        seen = {}
        for r in records:
            seen.setdefault(r["target"], set()).add(r["status"])
        assert set(seen) == set(TARGETS)
        # Every target both ran to completion and refused something.
        assert [t for t, s in seen.items() if not {"ok", "error"} <= s] == []


def test_fuzz_core_ops(records):
    fails = [r for r in records if r["status"] == "fail" and r["target"] not in ROI_TARGETS]
    assert not fails, _report(fails)


def test_fuzz_roi_ops(records):
    fails = [r for r in records if r["status"] == "fail" and r["target"] in ROI_TARGETS]
    if fails and ROI_FUZZ_PENDING:
        pytest.xfail("ROI_FUZZ_PENDING: " + _report(fails, limit=15))
    assert not fails, _report(fails)


def test_harness_reports_crashes_hangs_and_bad_errors(monkeypatch):
    """Selftest targets: each misbehaviour is reported against exactly its case, and the run goes on."""
    monkeypatch.setenv("SNIPER_FUZZ_SELFTEST", "1")
    got = runner.run(SEED, 6, workers=1, call_timeout=3.0)
    detail = {r["target"]: r["detail"] for r in got}
    assert [r["status"] for r in got] == ["fail"] * 6
    assert re.search("timeout: generating the case took more than 3 s", detail["?"])
    assert re.search("crash: child killed by signal SIGSEGV", detail["selftest.crash"])
    assert re.search("hang: no result after 3 s", detail["selftest.hang"])
    assert re.search("exception type not accepted: ZeroDivisionError", detail["selftest.foreign"])
    assert re.search("non-finite values in output", detail["selftest.nonfinite"])
    assert re.search("message does not start with 'selftest:'", detail["selftest.unnamed"])
