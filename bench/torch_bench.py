"""What the PyTorch halves of the benches against gevaldi share
(bench/imagenet_reference.py, bench/generator_reference.py): their
arguments and their timing loop, the same as benches/common/mod.rs's on
gevaldi's side."""
import argparse
import os
import time

import torch


def arguments(doc, workloads, batch):
    """`make|time [workload ...] --dir DIR` and the timing settings, with
    torch's threads set (`--threads`, default: every core) and the
    workloads checked (default: all of `workloads`, as `args.names`)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["make", "time"])
    ap.add_argument("workloads", nargs="*", help=f"default: all of {' '.join(workloads)}")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=batch, help="the saved inputs' rows repeated (timing only)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--min-steps", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=8.0)
    args = ap.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    args.names = args.workloads or list(workloads)
    bad = [n for n in args.names if n not in workloads]
    if bad:
        raise SystemExit(f"unknown workload(s) {bad}: expected some of {list(workloads)}")
    return args


def time_workload(step, args):
    """`args.warmup` untimed steps, then at least `args.min_steps` and at
    most `args.max_steps` within `args.budget_s`: (steps, seconds)."""
    for _ in range(args.warmup):
        step()
    n = 0
    started = time.perf_counter()
    while n < args.min_steps or (n < args.max_steps and time.perf_counter() - started < args.budget_s):
        step()
        n += 1
    return n, time.perf_counter() - started
