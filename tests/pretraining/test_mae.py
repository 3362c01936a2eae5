"""The masked autoencoder: hidden content cannot leak, the loss counts hidden valid pixels only, shapes."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from helpers import clone_stack, seeded
from spectravlm.encoders.spectral import build_encoder
from spectravlm.errors import ModelConfigError
from spectravlm.heads.contrastive import info_nce, padded_all_gather
from spectravlm.pretraining.mae import MaskedAutoencoder, build_mae

P = 8  # patch size of these tests (32 px windows: 4 x 4 patches)


def _mae(bands, strategy="random", ratio=0.75, tokenizer="wavelength", contrastive=0.0):
    torch.manual_seed(0)
    enc = build_encoder("test", patch_size=P, tokenizer=tokenizer)
    mae = build_mae(enc, bands, 32, 1, 4, ratio, strategy, contrastive_weight=contrastive, contrastive_dim=16)
    return mae.eval()


def _hidden_pixels(rec) -> torch.Tensor:
    """``[B,T,H,W]`` pixels under hidden tokens (one-group tokenizer)."""
    g = rec.grid
    tok = rearrange(rec.hidden, "b (t h w) -> b t h w", t=g.dates, h=g.rows, w=g.cols)
    return tok.repeat_interleave(P, 2).repeat_interleave(P, 3)


@pytest.mark.parametrize("strategy", ["random", "dates", "sensor"])
def test_hidden_content_has_no_influence_on_any_prediction(demo_batch, demo_bands, strategy):
    mae = _mae(demo_bands, strategy)
    with torch.no_grad():
        out = mae(demo_batch, seeded(1))
        changed = clone_stack(demo_batch)
        for g, rec in out.streams.items():
            hide = _hidden_pixels(rec).unsqueeze(2).expand_as(changed[g].values)
            v = changed[g].values
            noise = torch.rand(v.shape) * 1000 if g == "s2" else -torch.rand(v.shape) * 20
            changed[g].values = torch.where(hide, noise.to(v.dtype), v)
            assert bool(hide.any())
        again = mae(changed, seeded(1))
    for g in out.streams:
        assert torch.equal(out.streams[g].hidden, again.streams[g].hidden)
        torch.testing.assert_close(out.streams[g].prediction, again.streams[g].prediction, rtol=0, atol=1e-5)
        assert not torch.equal(out.streams[g].target, again.streams[g].target)  # the hidden input did change
    assert out.visible_tokens < 0.5 * out.total_tokens  # the encoder ran on the visible tokens only


def test_loss_counts_hidden_tokens_valid_pixels_only(demo_batch, demo_bands):
    mae = _mae(demo_bands)
    out = mae(demo_batch, seeded(2))
    recs = list(out.streams.values())
    grads = torch.autograd.grad(out.reconstruction_loss, [r.prediction for r in recs])
    for rec, grad in zip(recs, grads, strict=True):
        g = rec.grid
        pix = rearrange(rec.pixel_valid, "b t (h p) (w q) -> b (t h w) (p q)", p=P, q=P)
        counted = rec.hidden.unsqueeze(-1) & pix  # (B, N, p*p)
        grad = rearrange(grad, "b n (pq c) -> b n pq c", pq=P * P)
        assert bool((grad[~counted] == 0).all())  # visible tokens, invalid pixels: no gradient
        assert bool((grad[counted] != 0).any())
        assert g.groups == 1
    # The loss is the mean squared error over exactly those values.
    sq, n = 0.0, 0
    for rec in recs:
        tgt = rearrange(rec.target, "b t c (h p) (w q) -> b (t h w) (p q) c", p=P, q=P)
        pred = rearrange(rec.prediction, "b n (pq c) -> b n pq c", pq=P * P)
        pix = rearrange(rec.pixel_valid, "b t (h p) (w q) -> b (t h w) (p q)", p=P, q=P)
        m = (rec.hidden.unsqueeze(-1) & pix).unsqueeze(-1).expand_as(tgt)
        sq += float(((pred - tgt) ** 2)[m].sum().detach())
        n += int(m.sum())
    assert out.reconstruction_loss.item() == pytest.approx(sq / n, rel=1e-5)


def test_band_masking_removes_bands_from_the_encoder_input(demo_batch, demo_bands):
    mae = _mae(demo_bands, "bands", ratio=0.5)
    with torch.no_grad():
        out = mae(demo_batch, seeded(4))
        s2 = out.streams["s2"]
        assert int(s2.hidden_channels.sum()) == 5 and not bool(s2.hidden.any())
        changed = clone_stack(demo_batch)
        changed["s2"].values = changed["s2"].values.float()
        changed["s2"].values[:, :, s2.hidden_channels] = 9999.0  # the hidden bands' content
        again = mae(changed, seeded(4))
    torch.testing.assert_close(s2.prediction, again.streams["s2"].prediction, rtol=0, atol=1e-5)
    out = mae.train()(demo_batch, seeded(4))
    grad = torch.autograd.grad(out.loss, out.streams["s2"].prediction)[0]
    grad = rearrange(grad, "b n (pq c) -> b n pq c", pq=P * P)
    assert bool((grad[..., ~s2.hidden_channels] == 0).all()) and bool(
        (grad[..., s2.hidden_channels] != 0).any()
    )


def test_group_tokenizer_bands_strategy_and_images(demo_batch, demo_bands):
    mae = _mae(demo_bands, "bands", ratio=0.5, tokenizer="band_group")
    with torch.no_grad():
        out = mae(demo_batch, seeded(0))
    s2 = out.streams["s2"]
    assert s2.grid.groups == 3 and s2.member.shape == (3, 10)  # SatMAE groups: 10 m, 20 m red edge, SWIR
    assert bool(s2.member.sum(0).eq(1).all())  # every band in exactly one group
    # images(): with the targets as predictions, the reconstruction is the input everywhere
    for rec in out.streams.values():
        g = rec.grid
        tgt = rearrange(rec.target, "b t c (h p) (w q) -> b t (h w) (p q c)", p=P, q=P)
        rec.prediction = rearrange(
            tgt.unsqueeze(2).expand(-1, -1, g.groups, -1, -1), "b t g l v -> b (t g l) v"
        )
        target, masked, recon, hidden = MaskedAutoencoder.images(rec, P)
        torch.testing.assert_close(recon, target)
        assert bool((masked[hidden] == 0).all()) and bool(hidden.any())


def test_contrastive_loss_and_bad_batches(demo_batch, demo_bands):
    mae = _mae(demo_bands, contrastive=0.5)
    out = mae(demo_batch, seeded(0))
    assert out.contrastive_loss is not None and float(out.contrastive_loss) > 0
    assert float(out.loss) == pytest.approx(
        float(out.reconstruction_loss + 0.5 * out.contrastive_loss), rel=1e-6
    )
    other = dict(demo_bands, s2=demo_bands["s2"][:4])
    with pytest.raises(ModelConfigError, match="model was built for"):
        _mae(other)(demo_batch)


def test_info_nce_matches_single_process_when_gathered():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    b = torch.nn.functional.normalize(a + 0.3 * torch.randn(6, 8), dim=-1)
    keep = torch.ones(6, dtype=torch.bool)
    full = info_nce(a, b, keep, 0.1)
    parts = []
    # uneven ranks (an uneven last batch): rank 0 holds 4 samples, rank 1 holds 2
    rows = {0: slice(0, 4), 1: slice(4, 6)}

    def fake_all_gather(t: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """What a 2-rank all-gather returns, given every rank's padded contribution."""
        if t.numel() == 1 and t.dtype == torch.int64:  # the sizes
            return torch.tensor([[4], [2]])
        m = t.shape[0]
        pad = lambda x: torch.cat([x, x.new_zeros(m - x.shape[0], *x.shape[1:])])  # noqa: E731
        return torch.stack([pad(whole[rows[0]]), pad(whole[rows[1]])])

    for rank in (0, 1):
        mine = rows[rank]
        wholes = iter([a, b, keep.float()])

        def gather(t: torch.Tensor, w=wholes) -> tuple[torch.Tensor, int]:
            whole = next(w)
            return padded_all_gather(lambda x: fake_all_gather(x, whole), t)

        parts.append(info_nce(a[mine], b[mine], keep[mine], 0.1, gather, rank) * (mine.stop - mine.start))
    assert float(full) == pytest.approx(float(sum(parts) / 6), rel=1e-6)
    aligned = info_nce(a, a, keep, 0.05)
    shuffled = info_nce(a, a[torch.tensor([1, 2, 3, 4, 5, 0])], keep, 0.05)
    assert float(aligned) < 0.1 < float(shuffled)
    keep[2] = False  # an excluded sample is neither anchor nor negative
    drop = info_nce(a, b, keep, 0.1)
    kept = torch.tensor([0, 1, 3, 4, 5])
    assert float(drop) == pytest.approx(
        float(info_nce(a[kept], b[kept], torch.ones(5, dtype=torch.bool), 0.1))
    )
    with pytest.raises(ModelConfigError, match="temperature"):
        info_nce(a, b, keep, 0.0)
