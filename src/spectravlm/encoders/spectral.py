"""The sensor-native encoder: a ViT over the tokens of any band subset of one or several sensors.

Axis legend: ``B`` batch, ``T`` dates, ``N`` tokens, ``D`` width, ``n`` tokens of one date.

Input is a :class:`~spectravlm.stack.SensorStack` (or one :class:`~spectravlm.stack.SensorSeries`).
Each series is prepared by kind (optical: catalogue normalisation; SAR: the SAR front-end, in dB, with
the polarisation ratio), tokenized by one shared tokenizer (wavelength-conditioned, 3D cube or band
group; spectral identity from the catalogue), and given a 2-D sine/cosine patch position and a
learned sensor embedding. Then pre-norm transformer blocks with token masks
(:mod:`spectravlm.encoders.blocks`).

Two ways to run the blocks:

* :meth:`SpectralEncoder.forward_features`: every token of every group and date in one sequence
  (dates told apart by a date embedding of days since the sample's first valid date);
* :meth:`SpectralEncoder.forward_dates`: each date of each group on its own, giving per-date token
  grids ``[B,T,n,D]`` with their masks, the input of a temporal encoder.

Invalid tokens (missing dates, too few valid pixels) take no part in attention. No class token:
pooled features are the masked mean of the valid tokens.

The model file reads top-down as in timm: config, model, then named sizes (``tiny``/``small``/``base``
and a ``test`` variant used by the tests).

References:
    * Dosovitskiy et al., "An Image is Worth 16x16 Words" (ViT), https://arxiv.org/abs/2010.11929
    * Xiong et al., DOFA, https://arxiv.org/abs/2403.15356
    * Hong et al., SpectralGPT, https://arxiv.org/abs/2311.07113
    * Cong et al., SatMAE, https://arxiv.org/abs/2207.08051

"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from spectravlm.encoders.blocks import AttentionBackend, Block
from spectravlm.encoders.embeddings import date_embedding, grid_embedding
from spectravlm.encoders.outputs import DateTokens, EncoderOutput, masked_token_mean
from spectravlm.encoders.pretrained import PretrainedMixin
from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack
from spectravlm.tokenizers.base import PatchTokenizer, Remainder
from spectravlm.tokenizers.grouped import GroupedTokenizer
from spectravlm.tokenizers.image import ChannelImage, prepare_optical
from spectravlm.tokenizers.sar import S1_GRDH_ENL, SARFrontEnd, SpeckleFilter
from spectravlm.tokenizers.tokens import TokenCoords, Tokens
from spectravlm.tokenizers.wavelength import WavelengthTokenizer

TokenizerKind = Literal["wavelength", "cube", "band_group"]
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
    date_embedding: bool = True  # forward_features: add days-since-first-date embedding
    speckle_filter: SpeckleFilter | None = None  # SAR: None, "lee" or "refined_lee"
    speckle_window: int = 7  # SAR Lee window
    enl: float = S1_GRDH_ENL  # SAR equivalent number of looks
    sar_ratio: bool = True  # SAR: add VV/VH (HH/HV) ratio channels
    sar_nodata: float | None = -9999.0  # SAR nodata value in the input
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpectralEncoderConfig:
        """Rebuild from :func:`dataclasses.asdict` output (JSON lists become tuples)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelConfigError(f"unknown SpectralEncoderConfig fields: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if k == "sensors" else v for k, v in d.items()}
        return cls(**values)


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
        self.sensor_embed = nn.Embedding(len(config.sensors), config.dim)
        nn.init.normal_(self.sensor_embed.weight, std=0.02)
        rates = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.blocks = nn.ModuleList(
            [
                Block(
                    config.dim,
                    config.num_heads,
                    config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    drop_path=rate,
                    init_values=config.layer_scale,
                    backend=config.attention_backend,
                )
                for rate in rates
            ]
        )
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self._pos_cache: dict[tuple[object, ...], Tensor] = {}
        self.apply(_init_linear)

    @property
    def dim(self) -> int:
        """Token width ``D``."""
        return self.config.dim

    # ---- stages ---------------------------------------------------------------------------------

    def prepare(self, series: SensorSeries) -> ChannelImage:
        """Normalised channels of a series: catalogue statistics (optical) or the SAR front-end."""
        if series.sensor not in self.config.sensors:
            raise ModelConfigError(
                f"this encoder accepts sensors {', '.join(self.config.sensors)}; got {series.sensor}"
            )
        if get_sensor(series.sensor).kind == "sar":
            return self.sar_front_end(series)
        return prepare_optical(series)

    def tokenize(self, inputs: SensorStack | SensorSeries) -> dict[str, Tokens]:
        """Tokens of every sensor group (tokenizer output: spectral identity, no position yet)."""
        return {g: self.tokenizer(self.prepare(s)) for g, s in _groups(inputs).items()}

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

    def blocks_forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Run the blocks and the final norm on ``x [B,N,D]`` with mask ``[B,N]`` (None = all valid)."""
        if mask is not None and bool(mask.all()):
            mask = None  # unmasked attention takes the fastest kernel
        for blk in self.blocks:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, mask, use_reentrant=False)
            else:
                x = blk(x, mask)
        return self.norm(x)

    # ---- entry points ---------------------------------------------------------------------------

    def forward_features(self, inputs: SensorStack | SensorSeries) -> EncoderOutput:
        """Encode every token of every sensor group and date jointly.

        Returns:
            :class:`EncoderOutput` with tokens ``[B,N,D]``, mask ``[B,N]``, coordinates and the
            span of each sensor group.

        """
        parts = self.tokenize(inputs)
        xs, spans, start = [], {}, 0
        for g, tok in parts.items():
            xs.append(self.embed(tok))
            spans[g] = (start, start + tok.tokens.shape[1])
            start += tok.tokens.shape[1]
        x = torch.cat(xs, dim=1)
        mask = torch.cat([t.mask for t in parts.values()], dim=1)
        coords = TokenCoords.cat([t.coords for t in parts.values()])
        if self.config.date_embedding and _several_dates(parts):
            x = x + date_embedding(coords.time, mask, self.dim).to(x.dtype)
        x = self.blocks_forward(x, mask)
        return EncoderOutput(x, mask, coords, spans, {g: t.grid for g, t in parts.items()})

    def forward_dates(self, inputs: SensorStack | SensorSeries) -> dict[str, DateTokens]:
        """Encode each date of each sensor group on its own: per-date token grids.

        Returns:
            Per sensor group, :class:`DateTokens` with tokens ``[B,T,n,D]`` (zero where invalid)
            and mask ``[B,T,n]``.

        """
        out = {}
        for g, tok in self.tokenize(inputs).items():
            b, t = tok.coords.time.shape[0], tok.grid.dates
            x = rearrange(self.embed(tok), "b (t n) d -> (b t) n d", t=t)
            mask = rearrange(tok.mask, "b (t n) -> (b t) n", t=t)
            x = self.blocks_forward(x, mask) * mask.unsqueeze(-1)
            out[g] = DateTokens(
                tokens=rearrange(x, "(b t) n d -> b t n d", b=b),
                mask=rearrange(mask, "(b t) n -> b t n", b=b),
                times=_groups(inputs)[g].times,
                grid=tok.grid,
                sensor=tok.sensor,
            )
        return out

    def forward(self, inputs: SensorStack | SensorSeries) -> Tensor:
        """Pooled features ``[B,D]``: mean of the valid tokens of :meth:`forward_features`."""
        out = self.forward_features(inputs)
        return masked_token_mean(out.tokens, out.mask)


def _groups(inputs: SensorStack | SensorSeries) -> dict[str, SensorSeries]:
    if isinstance(inputs, SensorSeries):
        return {inputs.sensor: inputs}
    if not inputs.series:
        raise ModelConfigError("the SensorStack holds no sensor series")
    return inputs.series


def _several_dates(parts: dict[str, Tokens]) -> bool:
    return len(parts) > 1 or any(t.grid.dates > 1 for t in parts.values())


def _init_linear(m: nn.Module) -> None:
    """ViT initialisation of the blocks (timm ``init_weights_vit_timm``); tokenizer keeps its own."""
    if isinstance(m, Block):
        for sub in m.modules():
            if isinstance(sub, nn.Linear):
                nn.init.trunc_normal_(sub.weight, std=0.02)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)


# ---- named sizes ----------------------------------------------------------------------------------


def _sized(
    dim: int,
    depth: int,
    heads: int,
    patch_size: int,
    tokenizer: TokenizerKind,
    sensors: tuple[str, ...],
    gradient_checkpointing: bool,
    drop_path_rate: float,
    descriptor_dim: int = 128,
) -> SpectralEncoder:
    return SpectralEncoder(
        SpectralEncoderConfig(
            dim=dim,
            depth=depth,
            num_heads=heads,
            patch_size=patch_size,
            tokenizer=tokenizer,
            sensors=sensors,
            gradient_checkpointing=gradient_checkpointing,
            drop_path_rate=drop_path_rate,
            descriptor_dim=descriptor_dim,
        )
    )


def spectral_encoder_test(
    tokenizer: TokenizerKind = "wavelength",
    sensors: tuple[str, ...] = ALL_SENSORS,
    patch_size: int = 8,
    gradient_checkpointing: bool = False,
) -> SpectralEncoder:
    """Tiny test variant (D=32, 2 blocks, 2 heads, descriptor width 32), for unit tests only."""
    return _sized(32, 2, 2, patch_size, tokenizer, sensors, gradient_checkpointing, 0.0, descriptor_dim=32)


def spectral_encoder_tiny(
    tokenizer: TokenizerKind = "wavelength",
    sensors: tuple[str, ...] = ALL_SENSORS,
    patch_size: int = 16,
    gradient_checkpointing: bool = False,
    drop_path_rate: float = 0.0,
) -> SpectralEncoder:
    """ViT-Ti sized encoder: D=192, 12 blocks, 3 heads."""
    return _sized(192, 12, 3, patch_size, tokenizer, sensors, gradient_checkpointing, drop_path_rate)


def spectral_encoder_small(
    tokenizer: TokenizerKind = "wavelength",
    sensors: tuple[str, ...] = ALL_SENSORS,
    patch_size: int = 16,
    gradient_checkpointing: bool = False,
    drop_path_rate: float = 0.0,
) -> SpectralEncoder:
    """ViT-S sized encoder: D=384, 12 blocks, 6 heads."""
    return _sized(384, 12, 6, patch_size, tokenizer, sensors, gradient_checkpointing, drop_path_rate)


def spectral_encoder_base(
    tokenizer: TokenizerKind = "wavelength",
    sensors: tuple[str, ...] = ALL_SENSORS,
    patch_size: int = 16,
    gradient_checkpointing: bool = False,
    drop_path_rate: float = 0.1,
) -> SpectralEncoder:
    """ViT-B sized encoder: D=768, 12 blocks, 12 heads."""
    return _sized(768, 12, 12, patch_size, tokenizer, sensors, gradient_checkpointing, drop_path_rate)


EncoderSize = Literal["test", "tiny", "small", "base"]
ENCODER_SIZES: tuple[str, ...] = ("test", "tiny", "small", "base")


def build_encoder(
    size: EncoderSize = "small",
    patch_size: int = 16,
    tokenizer: TokenizerKind = "wavelength",
    drop_path_rate: float = 0.0,
    gradient_checkpointing: bool = False,
) -> SpectralEncoder:
    """Build a :class:`SpectralEncoder` of a named size (``test`` is the tiny variant for unit tests)."""
    if size == "test":
        return spectral_encoder_test(
            tokenizer, patch_size=patch_size, gradient_checkpointing=gradient_checkpointing
        )
    factories = {
        "tiny": spectral_encoder_tiny,
        "small": spectral_encoder_small,
        "base": spectral_encoder_base,
    }
    if size not in factories:
        raise ModelConfigError(f"encoder size must be one of {', '.join(ENCODER_SIZES)}; got {size!r}")
    return factories[size](
        tokenizer,
        patch_size=patch_size,
        gradient_checkpointing=gradient_checkpointing,
        drop_path_rate=drop_path_rate,
    )
