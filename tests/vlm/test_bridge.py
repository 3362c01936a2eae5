"""QFormerBridge: what it attends to, float32, BLIP-2 initialisation, instruction-aware queries, saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    OPTConfig,
)

from spectravlm.encoders.outputs import EncoderOutput
from spectravlm.encoders.spectral import spectral_encoder_test
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorStack
from spectravlm.vlm import QFormerBridge, QFormerBridgeConfig
from vlm.tiny import tiny_bridge


def _bridge(**overrides: object) -> QFormerBridge:
    torch.manual_seed(0)
    config = tiny_bridge(**overrides)
    config.encoder_width, config.llm_width = 32, 24
    return QFormerBridge(config)


@pytest.fixture(scope="module", params=["joint", "factorised"])
def encoded(scenes: SensorStack, request: pytest.FixtureRequest) -> EncoderOutput:
    """The test encoder's output on two demo windows, with either attention pattern."""
    torch.manual_seed(0)
    with torch.no_grad():
        return spectral_encoder_test(patch_size=8, attention=request.param).forward_features(scenes)


def test_output_shapes_and_float32(encoded: EncoderOutput) -> None:
    bridge = _bridge()
    out = bridge(encoded.tokens, encoded.mask)
    assert out.embeds.shape == (2, 4, 24) and out.queries.shape == (2, 4, 32)
    assert out.embeds.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = bridge(encoded.tokens.bfloat16(), encoded.mask)
    assert auto.embeds.dtype == torch.float32
    bridge.to(torch.bfloat16)  # what model.to(torch.bfloat16) does to every submodule
    assert all(p.dtype == torch.float32 for p in bridge.parameters())
    torch.testing.assert_close(bridge(encoded.tokens, encoded.mask).embeds, out.embeds)


def test_bridge_sees_every_sensor_and_date_and_ignores_masked_tokens(encoded: EncoderOutput) -> None:
    """A masked token changes nothing; any valid token of any sensor group and date changes the output."""
    bridge = _bridge()
    base = bridge(encoded.tokens, encoded.mask).embeds[0]
    mask = encoded.mask[0]
    assert not bool(mask.all()), "the demo windows have cloudy/missing S2 dates: some tokens are masked"

    @torch.no_grad()
    def changed(position: int) -> float:
        tokens = encoded.tokens.clone()
        tokens[0, position] += 3.0
        return float((bridge(tokens, encoded.mask).embeds[0] - base).abs().max())

    masked = int((~mask).nonzero()[0])
    assert changed(masked) == 0.0
    for group, (start, stop) in encoded.spans.items():
        dates = encoded.grids[group].dates
        per_date = (stop - start) // dates
        seen = 0
        for t in range(dates):
            valid = mask[start + t * per_date : start + (t + 1) * per_date].nonzero()
            if len(valid):
                assert changed(start + t * per_date + int(valid[0])) > 1e-6, f"{group} date {t} is not seen"
                seen += 1
        assert seen >= 2, f"{group}: expected several valid dates"
    assert encoded.coords.time[0].unique().numel() > 10  # S1 and S2 dates, all different days


def test_bad_encoder_tokens_are_refused(encoded: EncoderOutput) -> None:
    bridge = _bridge()
    with pytest.raises(ModelConfigError, match=r"encoder tokens \[scenes, tokens, 32\]"):
        bridge(encoded.tokens[..., :16], encoded.mask)
    with pytest.raises(ModelConfigError, match="mask"):
        bridge(encoded.tokens, encoded.mask[:, :5])
    with pytest.raises(ModelConfigError, match="encoder_width and llm_width"):
        QFormerBridge(tiny_bridge())


def test_instruction_aware_queries_read_the_text_but_not_its_padding(encoded: EncoderOutput) -> None:
    bridge = _bridge(instruction_aware=True, max_instruction_tokens=6)
    torch.manual_seed(1)
    text = torch.randn(2, 9, 24)
    text_mask = torch.ones(2, 9, dtype=torch.bool)
    text_mask[:, :2] = False  # left padding
    base = bridge(encoded.tokens, encoded.mask, text, text_mask).embeds
    assert not torch.allclose(base, bridge(encoded.tokens, encoded.mask).embeds)
    padded = text.clone()
    padded[:, :2] = 50.0
    torch.testing.assert_close(bridge(encoded.tokens, encoded.mask, padded, text_mask).embeds, base)
    early = text.clone()
    early[:, 2] = 50.0  # text token 0 of 7: beyond the last 6 that the Q-Former reads
    torch.testing.assert_close(bridge(encoded.tokens, encoded.mask, early, text_mask).embeds, base)
    late = text.clone()
    late[:, 8] = 50.0
    assert not torch.allclose(bridge(encoded.tokens, encoded.mask, late, text_mask).embeds, base)


def test_save_and_load_the_bridge_alone(tmp_path: Path, encoded: EncoderOutput) -> None:
    bridge = _bridge(instruction_aware=True)
    bridge.save_pretrained(tmp_path / "bridge")
    loaded = QFormerBridge.from_pretrained(tmp_path / "bridge")
    text, text_mask = torch.randn(2, 5, 24), torch.ones(2, 5, dtype=torch.bool)
    torch.testing.assert_close(
        loaded(encoded.tokens, encoded.mask, text, text_mask).embeds,
        bridge(encoded.tokens, encoded.mask, text, text_mask).embeds,
        rtol=0,
        atol=0,
    )
    with pytest.raises(ModelConfigError, match="not a bridge folder"):
        QFormerBridge.from_pretrained(tmp_path)


# ---- BLIP-2 -----------------------------------------------------------------------------------------


def _blip2(folder: Path, vision_width: int, queries: int = 4) -> Blip2ForConditionalGeneration:
    """A tiny BLIP-2 with a Q-Former the size of tiny_bridge(), saved to ``folder``."""
    torch.manual_seed(3)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=vision_width, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            image_size=32, patch_size=16,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            cross_attention_frequency=1,
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
            word_embed_proj_dim=16,
        ).to_dict(),
        num_query_tokens=queries,
    )  # fmt: skip
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.query_tokens.normal_()  # transformers initialises them to zeros; make them recognisable
    model.save_pretrained(folder)
    return model


def test_init_from_blip2_same_width_gives_blip2s_own_queries(tmp_path: Path, encoded: EncoderOutput) -> None:
    blip2 = _blip2(tmp_path / "blip2", vision_width=32)
    bridge = _bridge(init_from=str(tmp_path / "blip2")).eval()
    report = bridge.blip2_report
    assert report is not None and not report.reinitialised and not report.copied
    torch.testing.assert_close(bridge.query_tokens, blip2.query_tokens)
    with torch.no_grad():
        want = blip2.qformer(
            query_embeds=blip2.query_tokens.expand(2, -1, -1),
            encoder_hidden_states=encoded.tokens,
            encoder_attention_mask=encoded.mask,
        ).last_hidden_state
        got = bridge(encoded.tokens, encoded.mask).queries
    torch.testing.assert_close(got, want)


def test_init_from_blip2_other_width_reinitialises_cross_attention_key_value(tmp_path: Path) -> None:
    blip2 = _blip2(tmp_path / "blip2", vision_width=48)  # BLIP-2's is 1408; our encoder's is 32
    fresh = _bridge()
    bridge = _bridge(init_from=str(tmp_path / "blip2"))
    report = bridge.blip2_report
    assert report is not None and report.vision_width == 48
    assert sorted(report.reinitialised) == sorted(
        f"encoder.layer.{i}.crossattention.attention.{kv}.{p}"
        for i in range(2)
        for kv in ("key", "value")
        for p in ("weight",)
    )
    own, theirs, new = bridge.qformer.state_dict(), blip2.qformer.state_dict(), fresh.qformer.state_dict()
    for name, value in own.items():
        if name in report.reinitialised:
            torch.testing.assert_close(value, new[name])  # the seeded fresh initialisation
            assert value.shape[1] == 32
        else:
            torch.testing.assert_close(value, theirs[name], msg=name)


def test_instruction_aware_bridge_from_blip2_copies_the_query_feed_forward(tmp_path: Path) -> None:
    _blip2(tmp_path / "blip2", vision_width=32)
    bridge = _bridge(init_from=str(tmp_path / "blip2"), instruction_aware=True)
    report = bridge.blip2_report
    assert report is not None and len(report.copied) == 2 * 6  # 2 layers x (intermediate + output) params
    state = bridge.qformer.state_dict()
    torch.testing.assert_close(
        state["encoder.layer.1.output.dense.weight"], state["encoder.layer.1.output_query.dense.weight"]
    )


def test_blip2_errors_name_what_is_wrong(tmp_path: Path) -> None:
    _blip2(tmp_path / "blip2", vision_width=32, queries=8)
    with pytest.raises(ModelConfigError, match=r"query tokens \(1, 8, 32\).*from_blip2"):
        _bridge(init_from=str(tmp_path / "blip2"))
    config = QFormerBridgeConfig.from_blip2(tmp_path / "blip2", hidden_dropout_prob=0.0)
    assert (config.num_query_tokens, config.hidden_size, config.num_hidden_layers) == (8, 32, 2)
    assert config.cross_attention_frequency == 1 and config.hidden_dropout_prob == 0.0

    no_qformer = tmp_path / "vision_only"
    no_qformer.mkdir()
    (no_qformer / "config.json").write_text((tmp_path / "blip2" / "config.json").read_text())
    save_file(
        {"vision_model.embeddings.patch_embedding.weight": torch.zeros(2, 2)},
        str(no_qformer / "model.safetensors"),
    )
    with pytest.raises(ModelConfigError, match=r"holds no Q-Former weights.*'qformer"):
        _bridge(init_from=str(no_qformer))

    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelConfigError, match="'llama' checkpoint; expected a BLIP-2 one"):
        _bridge(init_from=str(other))
    with pytest.raises(ModelConfigError, match="missing does not exist"):
        _bridge(init_from=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelConfigError, match=r"has no config\.json"):
        _bridge(init_from=str(tmp_path / "empty"))
