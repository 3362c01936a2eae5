"""The prepared VLM GPU check runs end to end (tiny sizes, on the CPU): it cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vlm_gpu.py"


def test_vlm_gpu_check_dry_run_reports_every_part(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("vlm_gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    out = tmp_path / "vlm_gpu.json"
    assert check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["failed"] == []
    assert report["dtypes"]["bridge"] == ["torch.float32"] and report["dtypes"]["finite"]
    assert report["train_step"]["batch"] == 8 and len(report["train_step"]["losses"]) == 2
    assert {k: v for k, v in report["numbers"].items() if k != "wall_s"} == {
        "1234.5": pytest.approx(1234.5, rel=2e-6),
        "87.6": pytest.approx(87.6, rel=2e-6),
    }
    for batch in (1, 8):
        row = report["generate"][f"batch {batch}"]
        assert row["bare_tok_s"] > 0 and row["vlm_tok_s"] > 0 and 0.0 <= row["batched_equals_alone"] <= 1.0
    assert report["generate"]["sampling_ok"]
    assert report["bridge"]["encoder_ms_per_scene"] > 0 and report["bridge"]["bridge_ms_per_scene"] > 0
    if not torch.cuda.is_available():
        assert check.main(["--out", str(tmp_path / "x.json")]) == 2  # a real run needs a GPU
