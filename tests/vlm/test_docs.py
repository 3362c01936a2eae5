"""The Python example of docs/vlm.md runs as written, with local folders in place of the hub names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from spectravlm.encoders.spectral import spectral_encoder_test
from vlm.tiny import read_scenes

DOC = Path(__file__).resolve().parents[2] / "docs" / "vlm.md"


def test_vlm_doc_example_runs(
    tmp_path: Path, llm_dirs: dict[str, Path], demo_store_64: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[:1]
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    spectral_encoder_test(patch_size=8).save_pretrained(tmp_path / "encoder")
    replacements = {
        '"runs/pretrain_demo/tensorboard/version_0/encoder"': repr(str(tmp_path / "encoder")),
        '"Qwen/Qwen2.5-0.5B"': repr(str(llm_dirs["qwen2"])),
        "QFormerBridgeConfig(num_query_tokens=32)": (
            "QFormerBridgeConfig(num_query_tokens=32, hidden_size=32, num_hidden_layers=2, "
            "num_attention_heads=4, intermediate_size=64)"
        ),
    }
    for old, new in replacements.items():
        assert old in block, old
        block = block.replace(old, new)
    namespace: dict[str, object] = {"stack": read_scenes(demo_store_64, [0])}  # one scene, one prompt
    exec(compile(block, str(DOC), "exec"), namespace)
    model = namespace["model"]
    assert (tmp_path / "runs" / "vlm" / "spectravlm.json").is_file()
    assert type(model).__name__ == "SpectraVLM"
    assert isinstance(namespace["loss"], torch.Tensor) and torch.isfinite(namespace["loss"])
