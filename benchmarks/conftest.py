"""Benchmark plumbing: each benchmark sets `group` (the workload) and
extra_info["impl"]; at the end we print, per workload, how many times faster
`sniper` (or `sniper-cuda`) is than each baseline, by median time.
Shared helpers live in bench_utils.py."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import torch
from bench_utils import HAS_CUDA


def _resources(tr, benchmarks):
    """CPU seconds and peak RSS of the benchmarks that measure them (extra_info "cpu_s" and
    "peak_rss_mib", e.g. test_bench_scale.py's child processes), per workload."""
    measured = [b for b in benchmarks if "cpu_s" in b.extra_info and "peak_rss_mib" in b.extra_info]
    if not measured:
        return
    tr.section("CPU seconds and peak RSS (of the measured work; RSS includes the process's base)")
    for b in sorted(measured, key=lambda b: (b.group or "", b.extra_info.get("impl", b.name))):
        x = b.extra_info
        base = f" (base {x['ready_rss_mib']:,.0f} MiB)" if "ready_rss_mib" in x else ""
        tr.write_line(
            f"{b.group or b.name:<40} {x.get('impl', b.name):>16} {x['cpu_s']:10.2f} s CPU "
            f"{x['peak_rss_mib']:10,.0f} MiB peak{base}"
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    by_group = defaultdict(dict)
    rates = {}
    for bench in session.benchmarks:
        if bench.stats is None or not getattr(bench.stats, "median", None):
            continue
        impl = bench.extra_info.get("impl", bench.name)
        by_group[bench.group][impl] = bench.stats.median
        if "groups" in bench.extra_info:  # chip cover: groups per second
            rates[bench.group, impl] = bench.extra_info["groups"] / bench.stats.median
    rows = []
    for group, impls in sorted(by_group.items()):
        for ours in sorted(i for i in impls if i.startswith("sniper")):
            for base, t in sorted(impls.items()):
                # Ours against every baseline; our CUDA variants also against our CPU kernel.
                if base.startswith("sniper") and not (base == "sniper" and ours != "sniper"):
                    continue
                rows.append(
                    {
                        "workload": group,
                        "ours": ours,
                        "baseline": base,
                        "ours_ms": impls[ours] * 1e3,
                        "baseline_ms": t * 1e3,
                        "speedup": t / impls[ours],
                    }
                )
    _resources(terminalreporter, session.benchmarks)
    if not rows:
        return
    tr = terminalreporter
    tr.section("sniper_ext speedups (baseline median / ours median)")
    for r in rows:
        rate = rates.get((r["workload"], r["ours"]))
        r["groups_per_second"] = rate
        tr.write_line(
            f"{r['workload']:<40} {r['ours']:>12} vs {r['baseline']:<16} "
            f"{r['ours_ms']:10.3f} ms vs {r['baseline_ms']:10.3f} ms   {r['speedup']:8.1f}x"
            + (f"   ({rate:,.0f} groups/s)" if rate else "")
        )
    out = os.environ.get("SNIPER_BENCH_RATIOS")
    if out:
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "device": torch.cuda.get_device_name() if HAS_CUDA else "cpu",
                    "torch": torch.__version__,
                    "rows": rows,
                },
                f,
                indent=1,
            )
        os.replace(tmp, out)
