"""The sensor-native encoder: a ViT over the tokens of any band subset of one or several sensors.

Axis legend: ``B`` batch, ``T`` dates, ``N`` tokens, ``D`` width, ``n`` tokens of one date.

Input is a :class:`~spectravlm.stack.SensorStack` (or one :class:`~spectravlm.stack.SensorSeries`).
Each series is prepared by kind (optical: catalogue normalisation; SAR: the SAR front-end, in dB, with
the polarisation ratio), tokenized by one shared tokenizer (wavelength-conditioned, 3D cube or band
group; spectral identity from the catalogue), and given a 2-D sine/cosine patch position and a
learned sensor embedding. Then pre-norm transformer blocks with token masks
(:mod:`spectravlm.encoders.blocks`).

Two attention patterns (``config.attention``), trained by pretraining and loaded unchanged downstream:

* ``joint``: every token of every group and date attends to every other, in one sequence (dates told
  apart by a date embedding of days since the sample's first valid date); cost quadratic in dates x patches;
* ``factorised``: ``depth`` blocks over the tokens of each date of each group on its own, then
  ``temporal_depth`` blocks over the tokens of each patch location across groups, dates and spectral
  groups (with the date embedding): the spatial cost grows linearly with the number of dates (ViViT's
  factorised encoder, TSViT's order reversed).

Both give an :class:`~spectravlm.encoders.outputs.EncoderOutput` with the same layout and views (all tokens
with their mask, per-date tokens, per-location tokens, pooled vector). Invalid tokens (missing dates, too
few valid pixels) take no part in attention and come out as zeros. No class token.

Normalisation belongs to the encoder: its :class:`~spectravlm.encoders.statistics.BandStatistics` (saved
with the weights) turn the physical values of each series (``values * scale + offset`` in reflectance,
dB or linear power) into normalised inputs; a unit the encoder cannot take is an error.

The model file reads top-down as in timm: config, model, then named sizes (``tiny``/``small``/``base``
and a ``test`` variant used by the tests).

References:
    * Dosovitskiy et al., "An Image is Worth 16x16 Words" (ViT), https://arxiv.org/abs/2010.11929
    * Xiong et al., DOFA, https://arxiv.org/abs/2403.15356
    * Hong et al., SpectralGPT, https://arxiv.org/abs/2311.07113
    * Cong et al., SatMAE, https://arxiv.org/abs/2207.08051

"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from spectravlm.encoders.blocks import AttentionBackend, Block
from spectravlm.encoders.embeddings import date_embedding, grid_embedding
from spectravlm.encoders.outputs import EncoderOutput, location_index
from spectravlm.encoders.pretrained import PretrainedMixin
from spectravlm.encoders.statistics import CATALOGUE, BandStatistics
from spectravlm.encoders.temporal.ltae import LTAE
from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack
from spectravlm.tokenizers.base import PatchTokenizer, Remainder
from spectravlm.tokenizers.grouped import GroupedTokenizer
from spectravlm.tokenizers.image import ChannelImage, check_units, mask_invalid, prepare_optical
from spectravlm.tokenizers.sar import S1_GRDH_ENL, SARFrontEnd, SpeckleFilter
from spectravlm.tokenizers.tokens import TokenCoords, TokenGrid, Tokens
from spectravlm.tokenizers.wavelength import WavelengthTokenizer

TokenizerKind = Literal["wavelength", "cube", "band_group"]
AttentionPattern = Literal["joint", "factorised"]
LocationPoolKind = Literal["mean", "ltae"]
ALL_SENSORS: tuple[str, ...] = ("sentinel2_l2a", "sentinel2_l1c", "sentinel1_grd")


@dataclass
class SpectralEncoderConfig:
    """Hyperparameters of :class:`SpectralEncoder` (JSON-serialisable; saved with checkpoints)."""

    dim: int = 384  # token width D
    depth: int = 12  # transformer blocks
    num_heads: int = 6  # attention heads (dim divisible by it)
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    patch_size: int = 16  # pixels per patch side
    tokenizer: TokenizerKind = "wavelength"  # DOFA-style, SpectralGPT cubes or SatMAE band groups
    cube_bands: int = 3  # adjacent channels per cube token (tokenizer="cube")
    sensors: tuple[str, ...] = ALL_SENSORS  # catalogue sensors accepted; order fixes sensor ids
    descriptor_dim: int = 128  # width of wavelength/polarisation descriptors (DOFA: 128)
    min_valid_fraction: float = 0.5  # valid-pixel share for a valid token
    remainder: Remainder = "pad"  # image size not divisible by patch_size: pad, crop or error
    qkv_bias: bool = True
    drop_path_rate: float = 0.0  # stochastic depth, linear over blocks up to this value
    layer_scale: float | None = None  # LayerScale init value (None = off)
    attention_backend: AttentionBackend = "auto"  # sdpa, or xformers on CUDA when installed
    gradient_checkpointing: bool = False  # recompute block activations in backward (training)
    date_embedding: bool = True  # add the days-since-first-valid-date embedding (several dates/groups)
    attention: AttentionPattern = "joint"  # joint space-time, or factorised (space per date, then locations)
    temporal_depth: int = 2  # factorised: blocks over each location's tokens (``depth`` spatial blocks first)
    location_pool: LocationPoolKind = (
        "mean"  # locations(): masked mean, or a date-aware L-TAE (saved with it)
    )
    speckle_filter: SpeckleFilter | None = None  # SAR: None, "lee" or "refined_lee"
    speckle_window: int = 7  # SAR Lee window
    enl: float = S1_GRDH_ENL  # SAR equivalent number of looks
    sar_ratio: bool = True  # SAR: add VV/VH (HH/HV) ratio channels
    sar_nodata: float | None = -9999.0  # SAR nodata value in the input
    stats_source: dict[str, str] = field(default_factory=dict)  # per sensor: where its statistics come from
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with the model

    def __post_init__(self) -> None:
        self.sensors = tuple(get_sensor(s).name for s in self.sensors)
        if self.dim % self.num_heads or self.dim % 4:
            raise ModelConfigError(
                f"dim={self.dim} must be divisible by num_heads={self.num_heads} and by 4 (2-D position)"
            )
        if self.tokenizer not in ("wavelength", "cube", "band_group"):
            raise ModelConfigError(
                f"tokenizer must be 'wavelength', 'cube' or 'band_group', got {self.tokenizer!r}"
            )
        if self.attention not in ("joint", "factorised"):
            raise ModelConfigError(f"attention must be 'joint' or 'factorised', got {self.attention!r}")
        if self.location_pool not in ("mean", "ltae"):
            raise ModelConfigError(f"location_pool must be 'mean' or 'ltae', got {self.location_pool!r}")
        if self.attention == "factorised" and self.temporal_depth < 1:
            raise ModelConfigError(
                f"factorised attention needs temporal_depth >= 1, got {self.temporal_depth}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpectralEncoderConfig:
        """Rebuild from :func:`dataclasses.asdict` output (JSON lists become tuples)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelConfigError(f"unknown SpectralEncoderConfig fields: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if k == "sensors" else v for k, v in d.items()}
        return cls(**values)


ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "patch_size",
    "tokenizer",
    "cube_bands",
    "sensors",
    "descriptor_dim",
    "qkv_bias",
    "layer_scale",
    "date_embedding",
    "sar_ratio",
    "attention",
    "temporal_depth",
    "location_pool",
)
"""Config fields that define the weights or their meaning: ``from_pretrained`` may not override them."""


def build_tokenizer(config: SpectralEncoderConfig) -> PatchTokenizer:
    """Build the tokenizer named by ``config.tokenizer``."""
    if config.tokenizer == "wavelength":
        return WavelengthTokenizer(
            config.dim,
            config.patch_size,
            config.sensors,
            config.min_valid_fraction,
            config.remainder,
            config.descriptor_dim,
        )
    return GroupedTokenizer(
        config.dim,
        config.patch_size,
        config.sensors,
        grouping=config.tokenizer,
        cube_bands=config.cube_bands,
        min_valid_fraction=config.min_valid_fraction,
        remainder=config.remainder,
        descriptor_dim=config.descriptor_dim,
    )


class SpectralEncoder(PretrainedMixin):
    """ViT-style encoder over tokens of any band subset of one or several catalogue sensors.

    Args:
        config: the hyperparameters.

    """

    config_class = SpectralEncoderConfig
    architecture_fields = ARCHITECTURE_FIELDS

    def __init__(self, config: SpectralEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SpectralEncoderConfig()
        self.tokenizer = build_tokenizer(config)
        self.sar_front_end = SARFrontEnd(
            speckle_filter=config.speckle_filter,
            window=config.speckle_window,
            enl=config.enl,
            add_ratio=config.sar_ratio,
            nodata=config.sar_nodata,
        )
        self.statistics = BandStatistics(config.sensors)
        for sensor in config.sensors:
            config.stats_source.setdefault(sensor, CATALOGUE)
        self.sensor_embed = nn.Embedding(len(config.sensors), config.dim)
        nn.init.normal_(self.sensor_embed.weight, std=0.02)
        temporal_depth = config.temporal_depth if config.attention == "factorised" else 0
        rates = torch.linspace(0, config.drop_path_rate, config.depth + temporal_depth).tolist()
        self.blocks = nn.ModuleList([self._block(rate) for rate in rates[: config.depth]])
        # factorised: the blocks above run over each date of each group; these over each patch location
        self.temporal_blocks = nn.ModuleList([self._block(rate) for rate in rates[config.depth :]])
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.location_pool: LTAE | None = None
        if config.location_pool == "ltae":
            self.location_pool = LTAE(
                in_dim=config.dim,
                d_model=config.dim,
                num_heads=config.num_heads,
                d_k=8,
                mlp_dims=(config.dim,),
            )
        self._pos_cache: dict[tuple[object, ...], Tensor] = {}
        self.apply(_init_linear)

    def _block(self, drop_path: float) -> Block:
        c = self.config
        return Block(
            c.dim,
            c.num_heads,
            c.mlp_ratio,
            qkv_bias=c.qkv_bias,
            drop_path=drop_path,
            init_values=c.layer_scale,
            backend=c.attention_backend,
        )

    @property
    def dim(self) -> int:
        """Token width ``D``."""
        return self.config.dim

    def __repr__(self) -> str:
        c = self.config
        stats = "; ".join(f"{s}: {c.stats_source.get(s, CATALOGUE)}" for s in c.sensors)
        return (
            f"SpectralEncoder(dim={c.dim}, depth={c.depth}, heads={c.num_heads}, patch={c.patch_size}, "
            f"tokenizer={c.tokenizer}, attention={c.attention}"
            + (f" + {c.temporal_depth} location blocks" if c.attention == "factorised" else "")
            + f", location_pool={c.location_pool}, sensors={','.join(c.sensors)}, "
            f"{sum(p.numel() for p in self.parameters()) / 1e6:.2f} M parameters; statistics: {stats})"
        )

    # ---- statistics -----------------------------------------------------------------------------

    def set_statistics(self, sensor: str, stats: Mapping[str, tuple[float, float]], source: str) -> None:
        """Replace the normalisation statistics of ``sensor``'s channels named in ``stats`` (physical units).

        Args:
            sensor: a catalogue sensor the encoder accepts.
            stats: ``{band: (mean, std)}`` in reflectance (optical) or dB (SAR).
            source: where they come from (``store:<path>``), recorded in ``config.stats_source``.

        """
        name = get_sensor(sensor).name
        self.statistics.update(name, stats)
        self.config.stats_source[name] = source

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay beyond biases and norms: embeddings and learned tokens."""
        out = {"sensor_embed.weight", "tokenizer.orbit_embed.weight"}
        for name, _ in self.tokenizer.named_parameters():
            if any(k in name for k in ("weight_tokens", "bias_token", "embed", "descriptor")):
                out.add(f"tokenizer.{name}")
        if self.location_pool is not None:
            out |= {f"location_pool.{n}" for n in self.location_pool.no_weight_decay()}
        return out

    def group_matcher(self, coarse: bool = False) -> Callable[[str], tuple[int, ...]]:
        """Layer grouping for timm's layer-wise learning-rate decay: stem, blocks in depth order, norm."""
        depth = len(self.blocks)

        def ordinal(name: str) -> tuple[int, ...]:
            parts = name.split(".")
            if parts[0] == "blocks":
                return (1 + int(parts[1]),)
            if parts[0] == "temporal_blocks":
                return (1 + depth + int(parts[1]),)
            if parts[0] in ("norm", "location_pool"):
                return (1 + depth + len(self.temporal_blocks),)
            return (0,)

        return ordinal

    # ---- stages ---------------------------------------------------------------------------------

    def prepare(self, series: SensorSeries, group: str = "") -> ChannelImage:
        """Normalised channels of a series, with this encoder's statistics (optical; SAR via the front-end).

        Raises:
            ModelConfigError: a sensor the encoder was not built for.
            UnknownUnitError: a unit the encoder cannot take (naming the group, the unit and those accepted).

        """
        where = f"sensor group {group!r} ({series.sensor})" if group else series.sensor
        if series.sensor not in self.config.sensors:
            raise ModelConfigError(f"{where}: this encoder accepts sensors {', '.join(self.config.sensors)}")
        check_units(series, where)
        if get_sensor(series.sensor).kind == "sar":
            image = self.sar_front_end(series)
            mean, std = self.statistics.lookup(series.sensor, tuple(c.name for c in image.channels))
            values = (image.values - mean.view(1, 1, -1, 1, 1)) / std.view(1, 1, -1, 1, 1)
            values, valid = mask_invalid(values, image.valid, check_finite=False, all_valid=image.all_valid)
            return replace(image, values=values, valid=valid)
        mean, std = self.statistics.lookup(series.sensor, series.bands)
        return prepare_optical(series, mean, std)

    def tokenize(self, inputs: SensorStack | SensorSeries) -> dict[str, Tokens]:
        """Tokens of every sensor group (tokenizer output: spectral identity, no position yet)."""
        return {g: self.tokenizer(self.prepare(s, g)) for g, s in _groups(inputs).items()}

    def embed(self, tokens: Tokens) -> Tensor:
        """Add patch position and sensor embeddings to tokenizer output: ``[B,N,D]``."""
        x = tokens.tokens
        key = (tokens.grid.dates, tokens.grid.groups, tokens.grid.rows, tokens.grid.cols, x.device, x.dtype)
        pos = self._pos_cache.get(key)
        if pos is None:  # fixed sine/cosine table of this layout: computed once, no parameters
            c = tokens.coords
            pos = grid_embedding(c.row[0], c.col[0], self.dim).to(x.dtype)
            self._pos_cache[key] = pos
        sensor = self.sensor_embed.weight[self.config.sensors.index(tokens.sensor)]
        return x + (pos + sensor)  # (B, N, D) + (N, D): one pass over the tokens

    def assemble(self, tokens: Mapping[str, Tokens], all_valid: bool = False) -> TokenSequence:
        """Embed every group's tokens and concatenate them into one sequence (see :class:`TokenSequence`)."""
        xs, spans, start = [], {}, 0
        for g, tok in tokens.items():
            xs.append(self.embed(tok))
            spans[g] = (start, start + tok.tokens.shape[1])
            start += tok.tokens.shape[1]
        return TokenSequence(
            x=torch.cat(xs, dim=1),
            valid=torch.cat([t.mask for t in tokens.values()], dim=1),
            coords=TokenCoords.cat([t.coords for t in tokens.values()]),
            spans=spans,
            grids={g: t.grid for g, t in tokens.items()},
            all_valid=all_valid,
        )

    def encode(self, seq: TokenSequence, keep: Tensor | None = None, gather: bool = False) -> Tensor:
        """Run the transformer over the tokens of ``seq`` that ``keep`` selects.

        Args:
            seq: the embedded sequence.
            keep: ``[B,N]`` bool tokens to encode (default: the valid ones). Other tokens take no part in
                any attention and come out as zeros.
            gather: gather the kept tokens into shorter sequences before the blocks (faster when few are
                kept, as in masked pretraining; costs one device synchronisation for the length).
                Without it the others are masked out of attention.

        Returns:
            ``[B,N,D]`` encoded tokens (final norm applied), zero where not kept.

        """
        if keep is None:
            keep = seq.valid
            everything = seq.all_valid  # host-side fact: no mask at all, the fastest kernels
        else:
            everything = False
        x = seq.x
        several_dates = len(seq.spans) > 1 or any(g.dates > 1 for g in seq.grids.values())
        dates = None
        if self.config.date_embedding and several_dates:
            # elapsed days since the first *valid* date, whichever tokens are kept (masked pretraining
            # sees the same date encoding as inference)
            dates = date_embedding(seq.coords.time, seq.valid, self.dim).to(x.dtype)
        if self.config.attention == "joint":
            if dates is not None:
                x = x + dates
            x = self._run(self.blocks, x, None if everything else keep, gather)
        else:
            x = self._factorised(x, seq, keep, everything, gather, dates)
        x = self.norm(x)
        return x if everything else x * keep.unsqueeze(-1).to(x.dtype)

    def _factorised(
        self,
        x: Tensor,
        seq: TokenSequence,
        keep: Tensor,
        everything: bool,
        gather: bool,
        dates: Tensor | None,
    ) -> Tensor:
        """Space per date of each group, then each patch location across groups, dates and spectral groups."""
        parts = []
        for g, (start, stop) in seq.spans.items():
            t = seq.grids[g].dates
            frames = rearrange(x[:, start:stop], "b (t n) d -> (b t) n d", t=t)
            frame_keep = None if everything else rearrange(keep[:, start:stop], "b (t n) -> (b t) n", t=t)
            out = self._run(self.blocks, frames, frame_keep, gather)
            parts.append(rearrange(out, "(b t) n d -> b (t n) d", b=x.shape[0]))
        x = torch.cat(parts, dim=1)
        if dates is not None:
            x = x + dates  # the location stage tells dates apart
        index = location_index(seq.spans, seq.grids, x.device)  # (S, L)
        seqs = rearrange(x[:, index], "b s l d -> (b l) s d")
        seq_keep = None if everything else rearrange(keep[:, index], "b s l -> (b l) s")
        out = rearrange(
            self._run(self.temporal_blocks, seqs, seq_keep, gather), "(b l) s d -> b s l d", b=x.shape[0]
        )
        return torch.zeros_like(x).index_copy(1, index.flatten(), rearrange(out, "b s l d -> b (s l) d"))

    def _run(self, blocks: nn.ModuleList, x: Tensor, keep: Tensor | None, gather: bool) -> Tensor:
        """Blocks over ``x [G,L,D]``, key mask ``keep [G,L]`` (None: all), optionally on gathered tokens."""
        if keep is not None and gather:
            k = max(1, int(keep.sum(dim=1).max()))
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]  # kept tokens first
            idx = repeat(order, "g k -> g k d", d=x.shape[-1])
            shown = keep.gather(1, order)
            out = self._blocks(blocks, x.gather(1, idx), shown) * shown.unsqueeze(-1).to(x.dtype)
            return torch.zeros_like(x).scatter(1, idx, out)
        return self._blocks(blocks, x, keep)

    def _blocks(self, blocks: nn.ModuleList, x: Tensor, mask: Tensor | None) -> Tensor:
        for blk in blocks:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, mask, use_reentrant=False)
            else:
                x = blk(x, mask)
        return x

    # ---- entry points ---------------------------------------------------------------------------

    def sequence(self, inputs: SensorStack | SensorSeries) -> TokenSequence:
        """Prepare, tokenize and embed every sensor group of ``inputs`` into one :class:`TokenSequence`."""
        groups = _groups(inputs)
        tokens = {g: self.tokenizer(self.prepare(s, g)) for g, s in groups.items()}
        # every token valid, known on the host: every pixel valid and finite (loader facts), no padded patch
        all_valid = all(
            s.all_valid is True
            and s.finite
            and (_no_padding(s, self.config.patch_size) or self.config.remainder == "crop")
            for s in groups.values()
        )
        return self.assemble(tokens, all_valid)

    def forward_features(self, inputs: SensorStack | SensorSeries) -> EncoderOutput:
        """Encode every token of every sensor group and date with the configured attention pattern.

        Returns:
            :class:`EncoderOutput`: all tokens ``[B,N,D]`` with their mask and coordinates, and the views
            :meth:`~EncoderOutput.per_date`, :meth:`~EncoderOutput.locations` and
            :meth:`~EncoderOutput.pooled`.

        """
        seq = self.sequence(inputs)
        tokens = self.encode(seq)
        return EncoderOutput(
            tokens,
            seq.valid,
            seq.coords,
            seq.spans,
            seq.grids,
            patch_size=self.config.patch_size,
            location_pool=self._pool_locations if self.location_pool is not None else None,
        )

    def _pool_locations(self, tokens: Tensor, times: Tensor, valid: Tensor) -> Tensor:
        assert self.location_pool is not None
        return self.location_pool(tokens, times, valid).locations

    def forward(self, inputs: SensorStack | SensorSeries) -> Tensor:
        """Pooled features ``[B,D]``: mean of the valid tokens of :meth:`forward_features`."""
        return self.forward_features(inputs).pooled()


@dataclass
class TokenSequence:
    """Embedded tokens of every sensor group of a batch, before the transformer.

    Attributes:
        x: ``[B,N,D]`` tokens with patch position and sensor embeddings (no date embedding yet).
        valid: ``[B,N]`` bool valid tokens.
        coords: per-token coordinates.
        spans: per sensor group, its ``(start, stop)`` along ``N``.
        grids: per sensor group, its ``(T, G, h, w)`` layout.
        all_valid: host-side fact: every token is valid (the encoder then runs without any mask).

    """

    x: Tensor
    valid: Tensor
    coords: TokenCoords
    spans: dict[str, tuple[int, int]]
    grids: dict[str, TokenGrid]
    all_valid: bool = False


def _groups(inputs: SensorStack | SensorSeries) -> dict[str, SensorSeries]:
    if isinstance(inputs, SensorSeries):
        return {inputs.sensor: inputs}
    if not inputs.series:
        raise ModelConfigError("the SensorStack holds no sensor series")
    return inputs.series


def _no_padding(series: SensorSeries, patch_size: int) -> bool:
    h, w = series.values.shape[-2:]
    return h % patch_size == 0 and w % patch_size == 0


def _init_linear(m: nn.Module) -> None:
    """ViT initialisation of the blocks (timm ``init_weights_vit_timm``); tokenizer keeps its own."""
    if isinstance(m, Block):
        for sub in m.modules():
            if isinstance(sub, nn.Linear):
                nn.init.trunc_normal_(sub.weight, std=0.02)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)


# ---- named sizes ----------------------------------------------------------------------------------


def spectral_encoder_test(
    tokenizer: TokenizerKind = "wavelength",
    sensors: tuple[str, ...] = ALL_SENSORS,
    patch_size: int = 8,
    gradient_checkpointing: bool = False,
    attention: AttentionPattern = "joint",
) -> SpectralEncoder:
    """Tiny test variant (D=32, 2 blocks, 2 heads, descriptor width 32), for unit tests only."""
    return build_encoder(
        "test",
        patch_size,
        tokenizer,
        0.0,
        gradient_checkpointing,
        attention,
        temporal_depth=1,
        sensors=sensors,
    )


def spectral_encoder_tiny(
    tokenizer: TokenizerKind = "wavelength", sensors: tuple[str, ...] = ALL_SENSORS, patch_size: int = 16
) -> SpectralEncoder:
    """ViT-Ti sized encoder: D=192, 12 blocks, 3 heads."""
    return build_encoder("tiny", patch_size, tokenizer, sensors=sensors)


def spectral_encoder_small(
    tokenizer: TokenizerKind = "wavelength", sensors: tuple[str, ...] = ALL_SENSORS, patch_size: int = 16
) -> SpectralEncoder:
    """ViT-S sized encoder: D=384, 12 blocks, 6 heads."""
    return build_encoder("small", patch_size, tokenizer, sensors=sensors)


def spectral_encoder_base(
    tokenizer: TokenizerKind = "wavelength", sensors: tuple[str, ...] = ALL_SENSORS, patch_size: int = 16
) -> SpectralEncoder:
    """ViT-B sized encoder: D=768, 12 blocks, 12 heads, drop-path 0.1."""
    return build_encoder("base", patch_size, tokenizer, drop_path_rate=0.1, sensors=sensors)


EncoderSize = Literal["test", "tiny", "small", "base"]
ENCODER_SIZES: tuple[str, ...] = ("test", "tiny", "small", "base")
_SIZES: dict[str, tuple[int, int, int, int]] = {  # dim, depth, heads, descriptor width
    "test": (32, 2, 2, 32),
    "tiny": (192, 12, 3, 128),
    "small": (384, 12, 6, 128),
    "base": (768, 12, 12, 128),
}


def encoder_config(
    size: EncoderSize = "small",
    patch_size: int = 16,
    tokenizer: TokenizerKind = "wavelength",
    drop_path_rate: float = 0.0,
    gradient_checkpointing: bool = False,
    attention: AttentionPattern = "joint",
    temporal_depth: int = 2,
    location_pool: LocationPoolKind = "mean",
    sensors: tuple[str, ...] = ALL_SENSORS,
) -> SpectralEncoderConfig:
    """The config of a named size (see :func:`build_encoder`)."""
    if size not in _SIZES:
        raise ModelConfigError(f"encoder size must be one of {', '.join(ENCODER_SIZES)}; got {size!r}")
    dim, depth, heads, desc = _SIZES[size]
    if attention == "factorised":
        if not 0 < temporal_depth < depth:
            raise ModelConfigError(
                f"temporal_depth={temporal_depth} must be between 1 and {depth - 1} for a {size} encoder "
                f"of {depth} blocks"
            )
        depth -= temporal_depth
    return SpectralEncoderConfig(
        dim=dim,
        depth=depth,
        num_heads=heads,
        patch_size=patch_size,
        tokenizer=tokenizer,
        sensors=sensors,
        descriptor_dim=desc,
        gradient_checkpointing=gradient_checkpointing,
        drop_path_rate=drop_path_rate,
        attention=attention,
        temporal_depth=temporal_depth,
        location_pool=location_pool,
    )


def build_encoder(
    size: EncoderSize = "small",
    patch_size: int = 16,
    tokenizer: TokenizerKind = "wavelength",
    drop_path_rate: float = 0.0,
    gradient_checkpointing: bool = False,
    attention: AttentionPattern = "joint",
    temporal_depth: int = 2,
    location_pool: LocationPoolKind = "mean",
    sensors: tuple[str, ...] = ALL_SENSORS,
) -> SpectralEncoder:
    """Build a :class:`SpectralEncoder` of a named size (``test`` is the tiny variant for unit tests).

    With ``attention="factorised"`` the named depth is split: ``depth - temporal_depth`` spatial blocks,
    then ``temporal_depth`` blocks per location, so both patterns have the same number of blocks.
    """
    return SpectralEncoder(
        encoder_config(
            size,
            patch_size,
            tokenizer,
            drop_path_rate,
            gradient_checkpointing,
            attention,
            temporal_depth,
            location_pool,
            sensors,
        )
    )


def task_encoder(
    size: EncoderSize,
    patch_size: int,
    tokenizer: TokenizerKind,
    attention: AttentionPattern,
    temporal_depth: int,
    drop_path_rate: float,
    gradient_checkpointing: bool,
    init_encoder: str | None,
    location_pool: LocationPoolKind = "mean",
) -> SpectralEncoder:
    """A task's encoder: new from a named size, or loaded from ``init_encoder`` when its architecture fits.

    Raises:
        ModelConfigError: ``init_encoder`` holds an encoder of another size, patch size, tokenizer or
            attention pattern (naming each difference).

    """
    config = encoder_config(
        size,
        patch_size,
        tokenizer,
        drop_path_rate,
        gradient_checkpointing,
        attention,
        temporal_depth,
        location_pool,
    )
    if init_encoder is None:
        return SpectralEncoder(config)
    loaded = load_encoder(
        init_encoder, gradient_checkpointing=gradient_checkpointing, drop_path_rate=drop_path_rate
    )
    keys = (
        "dim",
        "depth",
        "num_heads",
        "patch_size",
        "tokenizer",
        "attention",
        "temporal_depth",
        "location_pool",
    )
    diffs = [
        f"{k}: {getattr(loaded.config, k)!r} in {init_encoder}, {getattr(config, k)!r} here"
        for k in keys
        if getattr(loaded.config, k) != getattr(config, k)
        and not (k == "temporal_depth" and attention == "joint")
    ]
    if diffs:
        raise ModelConfigError(
            f"init_encoder {init_encoder} does not fit encoder={size!r}, patch_size={patch_size}, "
            f"tokenizer={tokenizer!r}, attention={attention!r}: " + "; ".join(diffs)
        )
    return loaded


def load_encoder(path: str | os.PathLike[str], **overrides: Any) -> SpectralEncoder:
    """Load a pretrained encoder from a ``save_pretrained`` folder or a task's ``.ckpt`` file.

    Args:
        path: a folder (``spectravlm export`` / ``save_pretrained``) or a Lightning checkpoint of any
            spectravlm task with an encoder.
        overrides: config fields to change that do not define the weights (``gradient_checkpointing``,
            ``drop_path_rate``, ``attention_backend``...).

    """
    p = Path(path)
    if p.is_dir():
        return SpectralEncoder.from_pretrained(p, **overrides)
    return SpectralEncoder.from_checkpoint(p, **overrides)
