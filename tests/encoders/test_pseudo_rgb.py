from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from spectravlm.adapters import apply_composite
from spectravlm.encoders.pseudo_rgb import (
    PseudoRGBEncoder,
    PseudoRGBEncoderConfig,
    pseudo_rgb_clip,
    pseudo_rgb_timm,
)
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorSeries, SensorStack

S2_BANDS = ("B02", "B03", "B04", "B08", "B11")


def _s2(b: int = 2, t: int = 2, size: int = 32) -> SensorSeries:
    g = torch.Generator().manual_seed(0)
    return SensorSeries(
        "sentinel2_l2a",
        S2_BANDS,
        torch.rand(b, t, 5, size, size, generator=g) * 3000,
        torch.tensor([[17000 + 7 * i for i in range(t)]] * b),
        torch.ones(b, t, size, size, dtype=torch.bool),
        units="reflectance",
        scale=1e-4,
    )


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    path = tmp_path_factory.mktemp("clip")
    CLIPVisionModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=224)
    path = tmp_path_factory.mktemp("timm") / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_timm_from_local_pretrained_file(timm_file: tuple[Path, torch.nn.Module]) -> None:
    path, reference = timm_file
    enc = pseudo_rgb_timm(bands=S2_BANDS, model_name="test_vit", checkpoint_path=str(path)).eval()
    ref_sd = reference.state_dict()
    got = enc.backbone.model.state_dict()
    assert set(got) == set(ref_sd)
    for k, v in got.items():
        assert torch.equal(v, ref_sd[k]), k
    s = _s2()
    out = enc.forward_features(s)
    assert out.tokens.shape == (2, 2 * 4, 64) and out.mask.all()
    # frozen backbone, trainable adapter
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    enc(s).square().mean().backward()
    assert enc.adapter.weight.grad is not None


def test_clip_from_local_pretrained_dir(clip_dir: Path) -> None:
    enc = pseudo_rgb_clip(str(clip_dir), bands=S2_BANDS, freeze_backbone=False).eval()
    ref = CLIPVisionModel.from_pretrained(clip_dir).eval()
    s = _s2(t=1)
    rgb = apply_composite(s, "s2_true_colour")[:, 0]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref(pixel_values=(rgb - mean) / std).last_hidden_state[:, 1:]
        got = enc.forward_features(s).tokens
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in enc.backbone.parameters())
    # another image size interpolates the position embedding
    assert enc.forward_features(_s2(t=1, size=48)).tokens.shape == (2, 36, 32)


@pytest.mark.parametrize("backbone", ["timm", "clip"])
def test_save_and_load_round_trip(tmp_path: Path, backbone: str, clip_dir: Path) -> None:
    torch.manual_seed(0)
    if backbone == "timm":
        enc = pseudo_rgb_timm(bands=S2_BANDS, model_name="test_vit")
    else:
        enc = pseudo_rgb_clip(str(clip_dir), bands=S2_BANDS)
    with torch.no_grad():
        enc.adapter.weight.add_(0.01)  # a trained adapter
    enc.eval()
    enc.save_pretrained(tmp_path / "m")
    loaded = PseudoRGBEncoder.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.pretrained_path is None and loaded.config.backbone == backbone
    s = _s2()
    with torch.no_grad():
        torch.testing.assert_close(loaded(s), enc(s), rtol=0, atol=0)


def test_fixed_composite_and_masks_and_dates() -> None:
    enc = PseudoRGBEncoder(
        PseudoRGBEncoderConfig(
            sensor="sentinel1_grd",
            composite="s1_vv_vh_ratio",
            learned=False,
            timm_model="test_vit",
            img_size=32,
        )
    ).eval()
    db = torch.rand(1, 3, 2, 32, 32) * 10 - 22
    valid = torch.ones(1, 3, 32, 32, dtype=torch.bool)
    valid[0, 1] = False
    s1 = SensorSeries("sentinel1_grd", ("VV", "VH"), db, torch.tensor([[1, 13, 25]]), valid, units="dB")
    assert not any(p.requires_grad for p in enc.adapter.parameters())
    tokens, mask = enc.forward_features(SensorStack({"s1_asc": s1})).per_date("s1_asc")
    assert tokens.shape == (1, 3, 4, 64)
    assert not mask[0, 1].any() and mask[0, 0].all()
    assert (tokens[0, 1] == 0).all()
    with pytest.raises(ModelConfigError, match="needs exactly one"):
        enc(_s2())
    with pytest.raises(ModelConfigError, match="is for Sentinel-1"):
        PseudoRGBEncoder(PseudoRGBEncoderConfig(composite="s1_vv_vh_ratio", timm_model="test_vit"))
