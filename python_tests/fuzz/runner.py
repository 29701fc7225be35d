"""Runs fuzz cases in child processes so that a crash or a hang is reported with the case that caused it.

Parent (``run``): ``workers`` threads each drive one child process (forked from a forkserver that has
imported torch and sniper_ext) over their share of the case indices (``i % workers == w``). The child
announces every case on a pipe before calling it (index, target, description) and reports the outcome
after. When the child dies (signal, abort, exit) the announced case is recorded as a crash, with the tail
of the child's stderr (kept in a file); when a case runs longer than its timeout the child is killed and
the case recorded as a hang. Either way a fresh child resumes with the next case.

Replay one case in-process, with its traceback (from ``python_tests``):

    python -m fuzz.runner --seed 0 --case 1234
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
STARTUP_TIMEOUT = 180.0  # importing torch on a busy machine


def _indices(count: int, only: str | None):
    """Case indices 0..count-1, or (with ``only``, a regex on target names) the first ``count`` indices
    whose target matches."""
    if not only:
        return list(range(count))
    from .cases import TARGET_NAMES

    pat = re.compile(only)
    hits = [k for k, name in enumerate(TARGET_NAMES) if pat.search(name)]
    if not hits:
        raise ValueError(f"no fuzz target matches {only!r}")
    period = len(TARGET_NAMES)
    return [r * period + k for r in range((count + len(hits) - 1) // len(hits)) for k in hits][:count]


# -- child --------------------------------------------------------------------------------------------


def _limit_memory(gb: float) -> None:
    """Caps the child's address space (``gb``; 0: none) so that a runaway allocation fails in the child
    instead of exhausting the machine. Not with CUDA, whose context reserves far more address space
    than it uses."""
    import torch

    if gb <= 0 or torch.cuda.is_available():
        return
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (int(gb * (1 << 30)), resource.getrlimit(resource.RLIMIT_AS)[1]))


def _child(conn, seed: int, indices: list[int], threads: int, deadline: float, err_path: str, env: dict) -> None:
    """Runs the cases, announcing each on ``conn`` before calling it."""
    fd = os.open(err_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.dup2(2, 1)  # anything the libraries print goes to the stderr file
    os.environ.update(env)  # a forkserver child has the server's environment, not the parent's
    import warnings

    import torch

    _limit_memory(float(env.get("SNIPER_FUZZ_MEMORY_GB", "6")))
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    from .cases import TARGETS, judge, make_case

    conn.send(("H", {"sniper_ext": __import__("sniper_ext").__file__}))
    for i in indices:
        if deadline and time.time() > deadline:
            conn.send(("D", {"reason": "deadline"}))
            return
        conn.send(("G", {"i": i}))  # generating: a slow generation is this case's timeout, not the run's
        try:
            case = make_case(seed, i)
            desc, target = case.describe(), case.target
        except Exception:  # noqa: BLE001 - a bug in the generator itself
            conn.send(("S", {"i": i, "target": "?", "desc": "?"}))
            conn.send(
                (
                    "E",
                    {
                        "i": i,
                        "status": "fail",
                        "seconds": 0.0,
                        "detail": "case generation failed: " + traceback.format_exc(limit=3)[-600:],
                    },
                )
            )
            continue
        conn.send(("S", {"i": i, "target": target, "desc": desc}))
        start = time.perf_counter()
        out = exc = None
        try:
            out = TARGETS[target].call(case)
        except BaseException as e:  # noqa: BLE001 - judged below
            exc = e
        seconds = time.perf_counter() - start
        try:
            status, detail = judge(case, out, exc)
        except Exception:  # noqa: BLE001
            status, detail = "fail", "judging the outcome failed: " + traceback.format_exc(limit=3)[-600:]
        conn.send(("E", {"i": i, "status": status, "detail": detail, "seconds": round(seconds, 4)}))
        sticky = exc is not None and re.search(r"CUDA error|illegal memory access|device-side assert", str(exc))
        del out, exc, case
        if sticky:  # the CUDA context is unusable now: later cases get a fresh process
            conn.send(("D", {"reason": "restart"}))
            return
    conn.send(("D", {"reason": "done"}))


# -- parent -------------------------------------------------------------------------------------------


_CONTEXT = None


def _context():
    """A forkserver that has imported torch and sniper_ext once: a fresh child (after every crash or
    hang) then starts in milliseconds, not seconds. Nothing is preloaded that could initialise CUDA."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload(["torch", "sniper_ext"])
        else:
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


def _describe_exit(rc) -> str:
    if rc is not None and rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def _tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _drive(indices, seed, threads, call_timeout, target_timeouts, deadline, records, lock, expected_module):
    ctx = _context()
    env = {k: v for k, v in os.environ.items() if k.startswith("SNIPER_") or k.endswith("_NUM_THREADS")}
    pos = 0
    stalls = 0
    while pos < len(indices) and not (deadline and time.time() > deadline):
        with tempfile.NamedTemporaryFile("w+b", prefix="sniper-fuzz-", suffix=".stderr", delete=False) as err:
            err_path = err.name
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_child, args=(writer, seed, indices[pos:], threads, deadline or 0.0, err_path, env), daemon=True
        )
        proc.start()
        writer.close()
        current, progressed, timeout = None, False, STARTUP_TIMEOUT
        try:
            while True:
                msg = "timeout"
                if reader.poll(timeout):
                    try:
                        msg = reader.recv()
                    except (EOFError, OSError):
                        msg = "eof"
                if msg in ("eof", "timeout"):
                    if msg == "timeout":
                        proc.kill()
                    proc.join()
                    rc = proc.exitcode
                    if current is not None:
                        why = (
                            f"hang: no result after {timeout:g} s (killed)"
                            if msg == "timeout"
                            else f"crash: child {_describe_exit(rc)}"
                        )
                        if current["target"] == "?":  # killed while generating the case
                            why = f"timeout: generating the case took more than {timeout:g} s (killed)"
                        tail = _tail(err_path)
                        with lock:
                            records.append(
                                {
                                    **current,
                                    "status": "fail",
                                    "detail": why
                                    + (f"; stderr tail: {tail[-700:]}" if tail and msg != "timeout" else ""),
                                    "seconds": None,
                                }
                            )
                        pos += 1
                        progressed = True
                    elif msg == "timeout" or rc != 0:
                        raise RuntimeError(
                            f"fuzz child {_describe_exit(rc)} outside any case (stderr: {_tail(err_path)[-1500:]})"
                        )
                    break
                tag, payload = msg
                if tag == "H":
                    if os.path.realpath(payload["sniper_ext"]) != os.path.realpath(expected_module):
                        raise RuntimeError(f"fuzz child imported {payload['sniper_ext']}, not {expected_module}")
                    timeout = call_timeout
                elif tag == "G":
                    current = {"index": payload["i"], "target": "?", "desc": "(case being generated)"}
                    timeout = call_timeout
                elif tag == "S":
                    current = {"index": payload["i"], "target": payload["target"], "desc": payload["desc"]}
                    timeout = target_timeouts.get(payload["target"], call_timeout)
                elif tag == "E":
                    with lock:
                        records.append(
                            {
                                **current,
                                "status": payload["status"],
                                "detail": payload["detail"],
                                "seconds": payload["seconds"],
                            }
                        )
                    current = None
                    pos += 1
                    progressed = True
                    timeout = call_timeout
                elif tag == "D":
                    proc.join()
                    if payload["reason"] == "deadline":
                        return
                    break
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
            reader.close()
            os.unlink(err_path)
        stalls = 0 if progressed else stalls + 1
        if stalls >= 2:
            raise RuntimeError("fuzz child makes no progress")


def run(
    seed: int = 0,
    count: int = 1000,
    *,
    workers: int = 1,
    threads: int = 1,
    call_timeout: float = 20.0,
    target_timeouts: dict[str, float] | None = None,
    seconds: float | None = None,
    only: str | None = None,
) -> list[dict]:
    """Runs cases ``0..count-1`` of ``seed`` (or the first ``count`` of the targets matching ``only``) in
    child processes; a case gets ``call_timeout`` seconds (``target_timeouts[target]`` if given); stops
    starting new cases after ``seconds``. Returns one record per case that ran:
    ``index, target, desc, status ("ok" | "error" | "fail"), detail, seconds``."""
    import sniper_ext

    indices = _indices(count, only)
    deadline = time.time() + seconds if seconds else None
    records: list[dict] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(w):
        try:
            _drive(
                indices[w::workers],
                seed,
                threads,
                call_timeout,
                target_timeouts or {},
                deadline,
                records,
                lock,
                sniper_ext.__file__,
            )
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return sorted(records, key=lambda r: r["index"])


# -- command line -------------------------------------------------------------------------------------


def _replay(seed: int, index: int) -> int:
    import warnings

    from .cases import TARGETS, judge, make_case

    warnings.simplefilter("default")
    case = make_case(seed, index)
    print(f"case {index} (seed {seed}): {case.describe()}")
    out = exc = None
    try:
        out = TARGETS[case.target].call(case)
    except BaseException as e:  # noqa: BLE001
        exc = e
        traceback.print_exc()
    status, detail = judge(case, out, exc)
    print(f"-> {status}{': ' + detail if detail else ''}")
    return 0 if status != "fail" else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case", type=int, action="append", help="replay this case in-process (repeatable)")
    p.add_argument("--count", type=int, default=300, help="without --case: run this many cases in children")
    p.add_argument("--only", help="regex on target names, e.g. 'anchors'")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--stats", action="store_true", help="outcomes per target")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--call-timeout", type=float, default=20.0)
    args = p.parse_args(argv)
    if args.case:
        return max(_replay(args.seed, i) for i in args.case)
    records = run(
        args.seed,
        args.count,
        workers=args.workers,
        threads=args.threads,
        only=args.only,
        call_timeout=args.call_timeout,
    )
    fails = [r for r in records if r["status"] == "fail"]
    if args.stats:
        from collections import Counter

        stats = Counter((r["target"], r["status"]) for r in records)
        for t in sorted({r["target"] for r in records}):
            print(f"{t:32s} ok {stats[t, 'ok']:4d}  error {stats[t, 'error']:4d}  fail {stats[t, 'fail']:4d}")
    for r in fails:
        print(f"[{r['index']}] {r['desc']}\n    -> {r['detail']}")
    print(f"{len(records)} cases, {len(fails)} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
