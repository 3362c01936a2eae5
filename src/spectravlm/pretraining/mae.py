"""Masked multi-sensor autoencoder: the pretraining model (a plain ``nn.Module``, no Lightning).

Axis legend: ``B`` batch, ``T`` dates, ``C`` bands of a stream, ``H``/``W`` pixels, ``N`` tokens of all
streams, ``K`` visible tokens, ``D`` encoder width, ``E`` decoder width, ``G`` spectral groups per patch,
``p`` patch size, ``P = p*p*C`` values per token.

One step (MAE, He et al., https://arxiv.org/abs/2111.06377, over spatial, spectral and temporal tokens):

1. each sensor stream of the :class:`~spectravlm.stack.SensorStack` is prepared by the encoder (its own
   statistics: optical reflectance, SAR in dB through the SAR front-end) and tokenized; the prepared image,
   in those normalised units, is also the reconstruction target (normalised explicitly even when the
   tokenizer folded the normalisation into its projection, as it does for a batch without invalid pixels);
2. tokens get their patch position, sensor and date embeddings (as in
   :meth:`~spectravlm.encoders.spectral.SpectralEncoder.forward_features`);
3. :func:`~spectravlm.pretraining.masking.choose_hidden` hides a ratio of the valid tokens (random, whole
   bands, whole dates or a whole sensor); the **encoder's blocks see only the visible tokens**, gathered
   into shorter sequences (``SpectralEncoder.encode(..., gather=True)``), so a 0.75 ratio runs the encoder
   on a quarter of the tokens, with the attention pattern it is configured with (joint or factorised);
4. the :class:`~spectravlm.pretraining.decoder.MaskedDecoder` reconstructs every token's pixels;
5. the loss is the mean squared error over the hidden tokens' *valid* pixels (cloud, nodata and padding
   never count), in normalised units. With nothing hidden (``mask_ratio=0``) it is taken over the visible
   tokens instead (plain autoencoding; used to time the unmasked step).

Optional cross-modal contrastive loss (CROMA, Fuller et al., https://arxiv.org/abs/2311.00566): with
``contrastive_weight > 0`` the optical streams and the SAR streams are encoded *separately* (unimodal, as
in CROMA), each is mean-pooled over its visible tokens and projected, and a symmetric InfoNCE pulls the S1
and S2 embeddings of the same window together. The decoder then attends across both modalities.

Why not ``SpectralEncoder.forward_features``: it runs the blocks on every token. Steps 1-3 use the
encoder's own stages (``prepare``, ``tokenizer``, ``assemble``, ``encode``), so the encoder keeps one
definition of each and the exported weights are the encoder's, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from spectravlm.encoders.embeddings import date_embedding, grid_embedding
from spectravlm.encoders.outputs import masked_token_mean
from spectravlm.encoders.spectral import SpectralEncoder
from spectravlm.errors import ModelConfigError
from spectravlm.heads.contrastive import Gather, ProjectionHead, info_nce
from spectravlm.pretraining.decoder import MaskedDecoder
from spectravlm.pretraining.masking import MaskStrategy, check_mask, choose_hidden
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorStack
from spectravlm.tokenizers.channels import SAR_RATIOS
from spectravlm.tokenizers.image import ChannelImage
from spectravlm.tokenizers.tokens import TokenGrid, Tokens


@dataclass
class StreamReconstruction:
    """What one sensor stream looked like to the model, and what the decoder made of it.

    Attributes:
        target: ``[B,T,C,H',W']`` prepared input in normalised units (``H'``, ``W'`` padded to a multiple
            of the patch size; 0 at invalid pixels).
        pixel_valid: ``[B,T,H',W']`` bool valid pixels.
        prediction: ``[B,N_s,P]`` predicted values of every token, ``(p q c)`` order.
        hidden: ``[B,N_s]`` bool tokens hidden from the encoder.
        hidden_channels: ``[C]`` bool bands removed from the encoder's input (``bands`` masking with a
            one-group tokenizer), else all False.
        member: ``[G,C]`` float, 1 where band ``c`` belongs to spectral group ``g``.
        grid: the ``(T, G, h, w)`` token layout.
        size: ``(H, W)`` before padding.

    """

    target: Tensor
    pixel_valid: Tensor
    prediction: Tensor
    hidden: Tensor
    hidden_channels: Tensor
    member: Tensor
    grid: TokenGrid
    size: tuple[int, int]


@dataclass
class MAEOutput:
    """Losses and reconstructions of one masked-autoencoder step.

    Attributes:
        loss: total loss (reconstruction + weighted contrastive).
        reconstruction_loss: MSE over hidden tokens' valid pixels (normalised units).
        baseline_loss: the same MSE for a constant prediction of 0, the band mean of the normalisation
            statistics: a reference the reconstruction must beat to have learned anything.
        contrastive_loss: cross-modal InfoNCE, or ``None`` when not used.
        streams: per sensor stream, its :class:`StreamReconstruction`.
        visible_tokens: ``K``, the length of the sequence the encoder ran on.
        total_tokens: ``N``, the length of the full sequence.

    """

    loss: Tensor
    reconstruction_loss: Tensor
    baseline_loss: Tensor
    contrastive_loss: Tensor | None
    streams: dict[str, StreamReconstruction]
    visible_tokens: int
    total_tokens: int


def _patches(x: Tensor, p: int) -> Tensor:
    """``[B,T,C,H,W]`` -> ``[B,T,h*w,(p q c)]``."""
    return rearrange(x, "b t c (h p) (w q) -> b t (h w) (p q c)", p=p, q=p)


def _pad_to(x: Tensor, p: int, value: float | bool = 0) -> Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % p, -w % p
    if ph == 0 and pw == 0:
        return x
    if x.dtype == torch.bool:
        return F.pad(x.to(torch.uint8), (0, pw, 0, ph), value=int(value)).bool()
    return F.pad(x, (0, pw, 0, ph), value=float(value))


class MaskedAutoencoder(nn.Module):
    """The sensor-native encoder, a masking strategy and a light decoder (see the module docstring).

    Args:
        encoder: the encoder being pretrained (its weights are what :meth:`SpectralEncoder.save_pretrained`
            exports afterwards).
        decoder: decoder whose ``outputs`` give ``patch_size**2 * len(bands[s])`` values per stream.
        bands: per sensor stream (the batch's group names), the bands in batch order.
        mask_ratio: share of valid tokens hidden, in ``[0, 1)``.
        mask_strategy: ``random``, ``bands``, ``dates`` or ``sensor``.
        projection: contrastive projection head (``None``: no contrastive loss).
        contrastive_weight: weight of the contrastive loss.
        temperature: InfoNCE temperature.

    """

    def __init__(
        self,
        encoder: SpectralEncoder,
        decoder: MaskedDecoder,
        bands: Mapping[str, Sequence[str]],
        mask_ratio: float = 0.75,
        mask_strategy: MaskStrategy = "random",
        projection: ProjectionHead | None = None,
        contrastive_weight: float = 0.0,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        check_mask(mask_ratio, mask_strategy)
        self.encoder = encoder
        self.decoder = decoder
        self.bands = {g: tuple(b) for g, b in bands.items()}
        self.mask_ratio = mask_ratio
        self.mask_strategy: MaskStrategy = mask_strategy
        self.projection = projection
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        p = encoder.config.patch_size
        for g, b in self.bands.items():
            want = p * p * len(b)
            have = decoder.heads[g].out_features if g in decoder.heads else None
            if have != want:
                raise ModelConfigError(
                    f"decoder predicts {have} values per token for stream {g!r}; patch size {p} and "
                    f"{len(b)} bands need {want}"
                )
        if encoder.config.remainder == "crop":
            raise ModelConfigError(
                "the masked autoencoder reconstructs whole windows: build the encoder with remainder "
                "'pad' or 'error', not 'crop'"
            )
        if contrastive_weight > 0 and projection is None:
            raise ModelConfigError("contrastive_weight > 0 needs a projection head")
        self.one_group = encoder.config.tokenizer == "wavelength"

    @property
    def patch_size(self) -> int:
        """Patch edge ``p`` in pixels."""
        return int(self.encoder.config.patch_size)

    # ---- inputs ------------------------------------------------------------------------------------

    def _check_batch(self, stack: SensorStack) -> None:
        have = {g: stack.series[g].bands for g in stack.series}
        if set(have) != set(self.bands) or any(have[g] != self.bands[g] for g in self.bands):
            raise ModelConfigError(
                f"the batch holds streams/bands {have}, but the model was built for {self.bands}; "
                "give the same bands to the data and the model"
            )

    def _hide_channels(self, image: ChannelImage, n_bands: int, generator: torch.Generator | None) -> Tensor:
        """``[C]`` bool bands to remove from the encoder's input (``bands`` masking, one-group tokenizer)."""
        hidden = torch.zeros(n_bands, dtype=torch.bool, device=image.values.device)
        if self.mask_strategy != "bands" or not self.one_group or self.mask_ratio == 0:
            return hidden
        n_keep = max(1, int(n_bands * (1.0 - self.mask_ratio)))
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n_bands, generator=generator, device=device).to(hidden.device)
        hidden[order[n_keep:]] = True
        return hidden

    @staticmethod
    def _drop_channels(image: ChannelImage, hidden: Tensor) -> ChannelImage:
        """Remove hidden bands from ``image``, and the SAR ratio channels made from a hidden band."""
        if not bool(hidden.any()):
            return image
        gone = {image.channels[i].name for i in torch.nonzero(hidden).flatten().tolist()}
        keep = [
            i
            for i, c in enumerate(image.channels)
            if c.name not in gone and not (c.name in SAR_RATIOS and set(SAR_RATIOS[c.name]) & gone)
        ]
        return replace(
            image,
            channels=tuple(image.channels[i] for i in keep),
            values=image.values[:, :, keep],
            gain=None if image.gain is None else image.gain[keep],  # a lazily normalised image
            shift=None if image.shift is None else image.shift[keep],
        )

    def _member(self, tokens: Tokens, image: ChannelImage, n_bands: int) -> Tensor:
        """``[G,C]`` band membership of the spectral groups (all ones for a one-group tokenizer)."""
        if tokens.grid.groups == 1:
            return image.values.new_ones(1, n_bands)
        keys = [c.key for c in image.channels[:n_bands]]
        return torch.tensor(
            [[float(k in g) for k in keys] for g in tokens.groups], device=image.values.device
        )

    # ---- forward -----------------------------------------------------------------------------------

    def forward(
        self,
        stack: SensorStack,
        generator: torch.Generator | None = None,
        gather: Gather | None = None,
        rank: int = 0,
    ) -> MAEOutput:
        """One masked-autoencoder step on a batch.

        Args:
            stack: the batch (raw store units, or normalised optical values; see the encoder's ``prepare``).
            generator: randomness of the masks (``None``: torch's global generator).
            gather: all-gather across ranks for the contrastive negatives (``None``: this process only).
            rank: this process's rank.

        """
        self._check_batch(stack)
        enc, p = self.encoder, self.patch_size
        images, hidden_ch, tokens = {}, {}, {}
        for g in self.bands:
            image = enc.prepare(stack.series[g], g)
            images[g] = image
            hidden_ch[g] = self._hide_channels(image, len(self.bands[g]), generator)
            tokens[g] = enc.tokenizer(self._drop_channels(image, hidden_ch[g]))
        seq = enc.assemble(tokens)  # the full sequence, embedded as the encoder does it
        x, valid, coords, spans = seq.x, seq.valid, seq.coords, seq.spans
        several_dates = len(tokens) > 1 or any(t.grid.dates > 1 for t in tokens.values())
        n = x.shape[1]
        stream = torch.cat(
            [torch.full((stop - s0,), i, device=x.device) for i, (s0, stop) in enumerate(spans.values())]
        )

        # -- masking and the encoder on the visible tokens ------------------------------------------
        if self.mask_strategy == "bands" and self.one_group:
            hidden = torch.zeros_like(valid)  # whole bands were removed from the input instead
        else:
            hidden = choose_hidden(
                self.mask_strategy,
                self.mask_ratio,
                valid,
                coords.t,
                coords.group,
                stream,
                coords.sensor,
                generator,
            )
        visible = valid & ~hidden
        enc_tokens = x.new_zeros(x.shape)
        pooled = []
        for member in self._segments(stack, spans, n, x.device):
            keep = visible & member
            out = enc.encode(seq, keep=keep, gather=True)  # the blocks see the visible tokens only
            enc_tokens = enc_tokens + out  # segments are disjoint; each is zero outside its tokens
            pooled.append((masked_token_mean(out, keep), keep.any(dim=1)))

        # -- decoder and losses ---------------------------------------------------------------------
        e = self.decoder.dim
        position = grid_embedding(coords.row, coords.col, e)
        if several_dates:
            position = position + date_embedding(coords.time, valid, e)
        predictions = self.decoder(enc_tokens, visible, position, coords.group, valid, spans)
        any_hidden = bool(hidden.any()) or any(bool(h.any()) for h in hidden_ch.values())
        streams: dict[str, StreamReconstruction] = {}
        sq_sum = x.new_zeros(())
        zero_sum = x.new_zeros(())
        count = x.new_zeros(())
        for g, tok in tokens.items():
            s0, s1 = spans[g]
            n_bands = len(self.bands[g])
            image = images[g].normalised()  # the target is in normalised units, whatever path the tokens took
            target = _pad_to(image.values[:, :, :n_bands], p)
            pixel_valid = _pad_to(image.valid, p, False)
            member = self._member(tok, image, n_bands)
            pred = predictions[g]
            grid = tok.grid
            tgt = repeat(_patches(target, p), "b t l v -> b (t g l) v", g=grid.groups)  # (B, N_s, P)
            pix = repeat(
                _patches(pixel_valid.unsqueeze(2).float(), p), "b t l v -> b (t g l) v", g=grid.groups
            )
            if bool(hidden_ch[g].any()):  # hidden bands of every valid token
                token_weight, chan = valid[:, s0:s1], member * hidden_ch[g].float()
            else:  # every band of the hidden tokens (of the visible ones when nothing is hidden)
                token_weight, chan = (hidden if any_hidden else visible)[:, s0:s1], member
            chan = repeat(chan, "g c -> (t g l) (pq c)", t=grid.dates, l=grid.rows * grid.cols, pq=p * p)
            weight = (
                token_weight.unsqueeze(-1).float() * repeat(pix, "b n pq -> b n (pq c)", c=n_bands) * chan
            )
            sq_sum = sq_sum + (weight * (pred.float() - tgt.float()) ** 2).sum()
            zero_sum = zero_sum + (weight * tgt.float() ** 2).sum().detach()
            count = count + weight.sum()
            streams[g] = StreamReconstruction(
                target=target,
                pixel_valid=pixel_valid,
                prediction=pred,
                hidden=hidden[:, s0:s1],
                hidden_channels=hidden_ch[g],
                member=member,
                grid=grid,
                size=(image.values.shape[-2], image.values.shape[-1]),
            )
        recon = sq_sum / count.clamp_min(1.0)
        loss, contrastive = recon, None
        if self.projection is not None and len(pooled) == 2:
            (za, ka), (zb, kb) = pooled
            contrastive = info_nce(
                self.projection(za), self.projection(zb), ka & kb, self.temperature, gather, rank
            )
            loss = recon + self.contrastive_weight * contrastive
        return MAEOutput(
            loss=loss,
            reconstruction_loss=recon,
            baseline_loss=zero_sum / count.detach().clamp_min(1.0),
            contrastive_loss=contrastive,
            streams=streams,
            visible_tokens=int(visible.sum(dim=1).max()),
            total_tokens=n,
        )

    def _segments(
        self, stack: SensorStack, spans: dict[str, tuple[int, int]], n: int, device: torch.device
    ) -> list[Tensor]:
        """Token sets encoded together: all (joint), or optical and SAR apart (contrastive)."""
        everything = torch.ones(n, dtype=torch.bool, device=device)
        if self.projection is None:
            return [everything]
        kinds: dict[str, Tensor] = {}
        for g, (s0, s1) in spans.items():
            kind = get_sensor(stack.series[g].sensor).kind
            kinds.setdefault(kind, torch.zeros(n, dtype=torch.bool, device=device))[s0:s1] = True
        if set(kinds) != {"optical", "sar"}:
            raise ModelConfigError(
                f"the contrastive loss pairs optical and SAR streams; this batch has {sorted(kinds)} only"
            )
        return [kinds["optical"], kinds["sar"]]

    # ---- images for figures ------------------------------------------------------------------------

    @staticmethod
    def images(rec: StreamReconstruction, patch_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Images of one stream for display, each cropped to the input size.

        Returns:
            ``(input, masked, reconstruction, hidden_pixels)``: normalised ``[B,T,C,H,W]`` input, the
            input with what the encoder did not see zeroed, the input with the hidden part replaced by the
            prediction, and ``[B,T,C,H,W]`` bool where the prediction was used.

        """
        p, grid = patch_size, rec.grid
        pred = rearrange(
            rec.prediction.float(),
            "b (t g h w) (p q c) -> b t g c (h p) (w q)",
            t=grid.dates,
            g=grid.groups,
            h=grid.rows,
            w=grid.cols,
            p=p,
            q=p,
        )
        weight = rearrange(rec.member, "g c -> 1 1 g c 1 1")
        pred = (pred * weight).sum(2) / weight.sum(2).clamp_min(1.0)  # (B, T, C, H, W)
        tok_hidden = rearrange(
            rec.hidden.float(),
            "b (t g h w) -> b t g h w",
            t=grid.dates,
            g=grid.groups,
            h=grid.rows,
            w=grid.cols,
        )
        chan_hidden = torch.einsum("btghw,gc->btchw", tok_hidden, rec.member) > 0
        chan_hidden = repeat(chan_hidden, "b t c h w -> b t c (h p) (w q)", p=p, q=p)
        chan_hidden = chan_hidden | rearrange(rec.hidden_channels, "c -> 1 1 c 1 1")
        h, w = rec.size
        target = rec.target[..., :h, :w].float()
        chan_hidden = chan_hidden[..., :h, :w]
        pred = pred[..., :h, :w]
        masked = torch.where(chan_hidden, torch.zeros_like(target), target)
        recon = torch.where(chan_hidden, pred, target)
        return target, masked, recon, chan_hidden


# ---- factory -------------------------------------------------------------------------------------


def build_mae(
    encoder: SpectralEncoder,
    bands: Mapping[str, Sequence[str]],
    decoder_dim: int = 256,
    decoder_depth: int = 2,
    decoder_heads: int = 8,
    mask_ratio: float = 0.75,
    mask_strategy: MaskStrategy = "random",
    contrastive_weight: float = 0.0,
    contrastive_dim: int = 128,
    temperature: float = 0.1,
) -> MaskedAutoencoder:
    """Build the decoder and projection head that fit ``encoder`` and ``bands`` into a MAE."""
    p = encoder.config.patch_size
    decoder = MaskedDecoder(
        encoder.dim, {g: p * p * len(b) for g, b in bands.items()}, decoder_dim, decoder_depth, decoder_heads
    )
    projection = ProjectionHead(encoder.dim, contrastive_dim) if contrastive_weight > 0 else None
    return MaskedAutoencoder(
        encoder, decoder, bands, mask_ratio, mask_strategy, projection, contrastive_weight, temperature
    )
