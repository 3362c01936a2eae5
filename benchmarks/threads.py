"""Threads and loader workers of a CPU fit, on an idle machine and under load.

Times ``spectravlm fit --config configs/pretrain_demo.yaml`` (the README's training job, here shortened with
``--epochs``) in fresh processes for every combination of

* torch intra-op threads (``OMP_NUM_THREADS`` = 1 or 2),
* OpenMP's wait policy (``OMP_WAIT_POLICY`` unset = spin, or ``PASSIVE``),
* DataLoader workers (0, 1, 2),

once on the machine as it is ("idle") and once with a busy loop pinned on one core running beside the fit
("loaded": what a shared 2-core machine, a CI runner or a laptop with other work looks like). Every setting
is run ``--repeats`` times, interleaved, and the median wall time of the whole ``fit`` process is reported.

Run from the project root (it writes a demo store and runs under /tmp)::

    flock /tmp/spectravlm-bench.lock python benchmarks/threads.py --epochs 2 --repeats 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"


def run_fit(store: Path, workdir: Path, threads: int, wait: str | None, workers: int, epochs: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env |= {"OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    if wait:
        env["OMP_WAIT_POLICY"] = wait
    cmd = [
        sys.executable, "-m", "spectravlm.cli", "fit", "--config", str(ROOT / "configs" / "pretrain_demo.yaml"),
        f"--data.stores=[{store}]", f"--data.num_workers={workers}", f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false", f"--run_dir={workdir}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="threads-bench-"))
    store = tmp / "demo.zarr"
    subprocess.run([sys.executable, "-m", "spectravlm.cli", "data", "demo", str(store)], check=True, capture_output=True)
    settings = list(itertools.product((1, 2), (None, "PASSIVE"), args.workers))
    print(f"machine: {os.cpu_count()} cores, load average before: {os.getloadavg()}")
    for condition in ("idle", "loaded"):
        busy = subprocess.Popen([sys.executable, "-c", BUSY]) if condition == "loaded" else None
        times: dict[tuple[int, str | None, int], list[float]] = {s: [] for s in settings}
        try:
            for r in range(args.repeats):
                for s in settings:
                    work = tmp / f"{condition}-{s[0]}-{s[1]}-{s[2]}-{r}"
                    work.mkdir()
                    times[s].append(run_fit(store, work, *s, args.epochs))
        finally:
            if busy is not None:
                busy.kill()
        print(f"\n{condition} ({args.epochs} epochs, median of {args.repeats}; load average {os.getloadavg()})")
        print(f"{'threads':>8}{'OMP_WAIT_POLICY':>17}{'workers':>9}{'fit s':>9}")
        for s in settings:
            print(f"{s[0]:>8}{s[1] or 'unset':>17}{s[2]:>9}{statistics.median(times[s]):>9.1f}")


if __name__ == "__main__":
    main()
