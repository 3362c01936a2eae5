"""Temporal encoders: throughput and peak memory for T = 6, 12, 24 at fixed spatial size vs TorchGeo's L-TAE.

Run from the project root (venv active), under the shared benchmark lock:

    flock /tmp/spectravlm-bench.lock python benchmarks/temporal.py

Setup (the same for every encoder): batch B = 8 samples, N = 64 locations per date (an 8 x 8 token grid,
e.g. a 128 px window in 16 px patches), width D = 128, all dates valid (TorchGeo's L-TAE takes no mask),
fp32, 2 threads, eval mode for forward, train mode (dropout 0) for forward+backward. All five encoders at
all three T are built in this one process and their calls are timed round-robin (every (encoder, T) once
per round), so that load from other processes on the shared machine falls on all of them alike; the
fastest call and the median call are reported. On a loaded machine the fastest call is the better
estimate of an encoder's own cost: two-thread kernels stall when another process takes one of the two
cores, which inflates the median of small, many-kernel models most.

* ``torchgeo_ltae``: ``torchgeo.models.LTAE(in_channels=128, d_model=128, n_head=16, n_neurons=(128, 128),
  len_max_seq=T, dropout=0)`` on ``[B*N, T, 128]`` (it needs ``len_max_seq == T``; it is rebuilt per T).
* ``ltae``: ours, ``LTAE(in_dim=128, d_model=128, num_heads=16, d_k=8, mlp_dims=(128,))``.
* ``transformer``: ``TemporalTransformer(128, depth=2, num_heads=4)``, per location over dates.
* ``factorised``: ``SpatialBlocks(128, depth=2, num_heads=4)`` per date, then the transformer above.
* ``joint``: ``JointSpaceTimeEncoder(128, depth=2, num_heads=4)`` over all T*N tokens.

Peak memory (measured in a child process, one encoder after the other): the rise of the process's peak
resident set (VmHWM, reset through /proc/self/clear_refs before the call) over its resident set before the
call, with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors go back to the OS between measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

B, N, D = 8, 64, 128
TS = (6, 12, 24)
ENCODERS = ("torchgeo_ltae", "ltae", "transformer", "factorised", "joint")


def build(name: str, t: int) -> nn.Module:
    from torchgeo.models import LTAE as TorchGeoLTAE

    from spectravlm.encoders.temporal.factorised import FactorisedSpaceTimeEncoder, SpatialBlocks
    from spectravlm.encoders.temporal.joint import JointSpaceTimeEncoder
    from spectravlm.encoders.temporal.ltae import LTAE
    from spectravlm.encoders.temporal.transformer import TemporalTransformer

    torch.manual_seed(0)
    if name == "torchgeo_ltae":
        return TorchGeoLTAE(
            in_channels=D, n_head=16, d_k=8, n_neurons=(D, D), dropout=0.0, d_model=D, len_max_seq=t
        )
    if name == "ltae":
        return LTAE(in_dim=D, d_model=D, num_heads=16, d_k=8, mlp_dims=(D,))
    if name == "transformer":
        return TemporalTransformer(D, depth=2, num_heads=4, backend="sdpa")
    if name == "factorised":
        return FactorisedSpaceTimeEncoder(
            SpatialBlocks(D, depth=2, num_heads=4, backend="sdpa"),
            TemporalTransformer(D, depth=2, num_heads=4, backend="sdpa"),
        )
    if name == "joint":
        return JointSpaceTimeEncoder(D, depth=2, num_heads=4, max_tokens=max(TS) * N, backend="sdpa")
    raise SystemExit(f"unknown encoder {name}")


def call(name: str, model: nn.Module, t: int) -> Callable[[], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(B, t, N, D, generator=g)
    times = 17000 + torch.randint(1, 30, (B, t), generator=g).cumsum(1)
    valid = torch.ones(B, t, N, dtype=torch.bool)
    if name == "torchgeo_ltae":
        flat = tokens.permute(0, 2, 1, 3).reshape(B * N, t, D)  # one sequence per location
        return lambda: model(flat)
    return lambda: model(tokens, times, valid).locations


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib(fn: Callable[[], object]) -> float:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    before = _rss_mib()
    fn()
    return _hwm_mib() - before


def measure_times(rounds_fwd: int, rounds_step: int) -> dict[tuple[str, int], dict[str, float]]:
    """Every (encoder, T) timed round-robin, so that load from other processes falls on all alike."""
    keys = [(name, t) for t in TS for name in ENCODERS]
    models = {k: build(*k) for k in keys}
    fwds = {k: call(k[0], m, k[1]) for k, m in models.items()}
    rows: dict[tuple[str, int], dict[str, float]] = {k: {} for k in keys}
    for mode, rounds in (("fwd", rounds_fwd), ("step", rounds_step)):
        for m in models.values():
            m.train(mode == "step")
        samples: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
        for i in range(rounds + 2):  # the first two rounds warm up
            for k in keys:
                t0 = time.perf_counter()
                _run(models[k], fwds[k], mode)
                if i >= 2:
                    samples[k].append(time.perf_counter() - t0)
        for k in keys:
            rows[k][f"{mode}_s"] = statistics.median(samples[k])
            rows[k][f"{mode}_min"] = min(samples[k])
    return rows


def measure_memory(t: int) -> dict[str, dict[str, float]]:
    """Peak memory of one call of each encoder at one T (run with MALLOC_MMAP_THRESHOLD_=65536)."""
    rows: dict[str, dict[str, float]] = {}
    for name in ENCODERS:
        model = build(name, t)
        fwd = call(name, model, t)
        rows[name] = {}
        for mode in ("fwd", "step"):
            model.train(mode == "step")
            _run(model, fwd, mode)  # warm-up
            model.zero_grad(set_to_none=True)
            one_call = lambda model=model, fwd=fwd, mode=mode: _run(model, fwd, mode)  # noqa: E731
            rows[name][f"{mode}_mib"] = _peak_mib(one_call)
        del model, fwd
    return rows


def _run(model: nn.Module, fwd: Callable[[], torch.Tensor], mode: str) -> None:
    if mode == "fwd":
        with torch.no_grad():
            fwd()
    else:
        model.zero_grad(set_to_none=True)
        fwd().square().mean().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed forward calls per encoder and T")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.memory_only:
        print(json.dumps({t: measure_memory(t) for t in TS}))
        return
    # Peak memory in a child process whose freed tensors go back to the OS at once (glibc would keep
    # them for reuse, hiding the next call's peak); times here, with the normal allocator (returning
    # every tensor to the OS costs page faults on each allocation and would distort the timings).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    child = subprocess.run(
        [sys.executable, __file__, "--memory-only"], env=env, check=True, capture_output=True, text=True
    )
    memory = {int(t): v for t, v in json.loads(child.stdout).items()}
    load_start = os.getloadavg()[0]
    rows = measure_times(args.rounds, max(5, args.rounds * 2 // 3))
    for (name, t), r in rows.items():
        r |= memory[t][name]
        print(
            f"{name:14s} T={t:2d} fwd {1e3 * r['fwd_min']:8.2f} ({1e3 * r['fwd_s']:8.2f}) ms  "
            f"step {1e3 * r['step_min']:8.2f} ({1e3 * r['step_s']:8.2f}) ms  "
            f"peak fwd {r['fwd_mib']:7.1f} MiB  step {r['step_mib']:7.1f} MiB",
            file=sys.stderr,
        )

    report(rows, load_start, os.getloadavg()[0])


def report(rows: dict[tuple[str, int], dict[str, float]], load_start: float, load_end: float) -> None:
    """Print the markdown tables for RESULTS.md."""
    print(
        f"\nB={B}, N={N} locations, D={D}, 2 threads, torch {torch.__version__}; "
        f"1-min load average {load_start:.1f} at start, {load_end:.1f} at end\n"
    )
    print("Samples/s from the fastest call, the median call in brackets.\n")
    print(
        "| encoder | T | forward samples/s | fwd+bwd samples/s | fwd vs TorchGeo L-TAE | "
        "fwd+bwd vs TorchGeo L-TAE | peak MiB fwd | peak MiB fwd+bwd |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in ENCODERS:
        for t in TS:
            r, base = rows[(name, t)], rows[("torchgeo_ltae", t)]
            print(
                f"| {name} | {t} | {B / r['fwd_min']:.0f} ({B / r['fwd_s']:.0f}) | "
                f"{B / r['step_min']:.0f} ({B / r['step_s']:.0f}) | "
                f"{base['fwd_min'] / r['fwd_min']:.2f}x ({base['fwd_s'] / r['fwd_s']:.2f}x) | "
                f"{base['step_min'] / r['step_min']:.2f}x ({base['step_s'] / r['step_s']:.2f}x) | "
                f"{r['fwd_mib']:.0f} | {r['step_mib']:.0f} |"
            )
    print(f"\nGrowth from T={TS[0]} to T={TS[-1]}: time (fastest call; median in brackets) and peak")
    print("memory multiplied by\n")
    print("| encoder | forward time | fwd+bwd time | peak memory fwd | peak memory fwd+bwd |")
    print("|---|---|---|---|---|")
    for name in ENCODERS:
        a, b = rows[(name, TS[0])], rows[(name, TS[-1])]
        cells = [
            f"{b[f'{m}_min'] / a[f'{m}_min']:.1f}x ({b[f'{m}_s'] / a[f'{m}_s']:.1f}x)"
            for m in ("fwd", "step")
        ]
        cells += [f"{b[k] / a[k]:.1f}x" for k in ("fwd_mib", "step_mib")]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
