"""The prepared GPU check runs end to end (tiny sizes, on the CPU), so it cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from helpers import CudaAutocast

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_gpu_check_dry_run_reports_every_part(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    torch.set_num_threads(1)
    out = tmp_path / "gpu.json"
    with CudaAutocast():  # the script's autocast regions lower what CUDA's would (einsum too)
        assert gpu.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["failed"] == []
    for attention in ("joint", "factorised"):
        part = report["bf16_step"][attention]
        assert part["finite"] and part["model_tflop_per_step"] > 0 and part["tokens"] > 0
    assert report["attention"]["sdpa_ms"] > 0 and "xformers" in report["attention"]
    assert report["ddp_fit"]["steps"] == 2 and report["ddp_fit"]["exported"]
    if not torch.cuda.is_available():
        assert gpu.main(["--out", str(tmp_path / "x.json")]) == 2  # a real run needs a GPU
