"""Tokens where a patch does not fit: single pixels with a patch tokenizer's weights, and covariates.

Axis legend: ``B`` batch, ``T`` dates, ``C`` channels, ``G`` spectral groups, ``S`` channel slots per group,
``H``/``W`` pixels (the ``k x k`` neighbourhood of a pixel time series), ``p`` patch size, ``D`` width,
``K`` covariates, ``T'`` covariate dates.

:class:`PixelTokenizer` makes one token per (date, spectral group, pixel) of an image smaller than a patch
(a pixel time series: ``1 x 1`` or a ``3 x 3`` neighbourhood), with the kernels of a
:class:`~spectravlm.tokenizers.base.PatchTokenizer` (wavelength-conditioned, cube or band-group; pretrained
or not). A pixel is taken as a *homogeneous patch*: the patch projection ``sum_{s,i,j} x_s W[s,i,j]`` of a
patch whose pixels all equal ``x`` is ``sum_s x_s (sum_{i,j} W[s,i,j])``, so the pixel's kernel is the
patch kernel summed over its ``p x p`` positions. A pixel therefore gets exactly the token the patch
tokenizer gives a patch filled with it: what a pretrained encoder saw over uniform ground. The kernels are
those of the patch tokenizer at every step (no copy): fine-tuning one fine-tunes the other.

:class:`CovariateTokenizer` turns numbers that are not imagery into tokens of their own: each static
covariate (elevation, slope) and each per-date covariate (temperature, precipitation) at each of its dates
becomes ``z * w_k + b_k``, with ``z`` the value standardised by statistics of the training split that the
module keeps in buffers (saved with the model) and ``w_k``, ``b_k`` learned per covariate (the numerical
embedding of Gorishniy et al., FT-Transformer, https://arxiv.org/abs/2106.11959). A missing value (NaN) is an
invalid token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from spectravlm.errors import ModelConfigError, UnknownSensorError
from spectravlm.sensors import get_sensor
from spectravlm.tokenizers.base import ORBITS, PatchTokenizer
from spectravlm.tokenizers.channels import Channel, lookup_channels
from spectravlm.tokenizers.image import ChannelImage
from spectravlm.tokenizers.tokens import TokenCoords, TokenGrid, Tokens


class PixelTokenizer(nn.Module):
    """One token per date, spectral group and pixel, with a patch tokenizer's kernels (see the module doc).

    Args:
        patch: the patch tokenizer whose weights are used (e.g. ``encoder.tokenizer``); it is not registered
            as a submodule here (its parameters belong to its owner, once).

    """

    def __init__(self, patch: PatchTokenizer) -> None:
        super().__init__()
        self._patch = (patch,)  # a tuple: not a submodule, so its parameters are not counted twice

    @property
    def patch(self) -> PatchTokenizer:
        """The patch tokenizer whose kernels are used."""
        return self._patch[0]

    def pixel_kernels(
        self, slots: tuple[tuple[str, ...], ...], present: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Kernels ``[G,S,D]`` (patch kernels summed over the ``p x p`` positions) and bias ``[G,D]``."""
        weight, bias = self.patch.kernels(slots, present)  # (G, S*p*p, D)
        s = len(slots[0])
        return rearrange(weight, "g (s pq) d -> g s pq d", s=s).sum(dim=2), bias

    def forward(self, image: ChannelImage) -> Tokens:
        """Tokens ``[B,(T G H W),D]`` of every date, group and pixel of ``image`` (any ``H``, ``W``).

        Raises:
            UnknownSensorError: a sensor the patch tokenizer was not built for.
            UnknownBandError: a channel its sensors do not have.

        """
        tok = self.patch
        if image.sensor not in tok.sensors:
            raise UnknownSensorError(
                f"tokenizer built for sensors {', '.join(tok.sensors)} got a {image.sensor} series"
            )
        image = image.normalised()
        channels = lookup_channels(tok.universe, [c.key for c in image.channels])
        valid = image.valid & torch.isfinite(image.values).all(dim=2)
        values = torch.where(valid.unsqueeze(2), image.values, image.values.new_zeros(()))  # invalid -> 0
        b, t, _, h, w = values.shape
        groups = tok.slot_groups(channels)
        s = max(len(g) for g in groups)
        slots = tuple(g + ("",) * (s - len(g)) for g in groups)
        position = {c.key: i for i, c in enumerate(channels)}
        present = torch.tensor([[k in position for k in g] for g in slots], device=values.device)
        index = torch.tensor([position.get(k, 0) for g in slots for k in g], device=values.device)
        weight, bias = self.pixel_kernels(slots, present)  # (G, S, D), (G, D) | None
        pixels = rearrange(values.index_select(2, index), "b t (g s) h w -> g (b t h w) s", g=len(slots))
        out = torch.bmm(pixels, weight.to(pixels.dtype))
        if bias is not None:
            out = out + bias[:, None].to(out.dtype)
        tokens = rearrange(out * tok.kernel_scale, "g (b t h w) d -> b (t g h w) d", b=b, t=t, h=h, w=w)
        group_embed = tok.group_embedding(groups)
        if group_embed is not None:
            tokens = tokens + repeat(group_embed, "g d -> (t g h w) d", t=t, h=h, w=w)
        if get_sensor(image.sensor).kind == "sar":
            orbit = ORBITS.index(image.orbit) if image.orbit in ORBITS else 0
            tokens = tokens + tok.orbit_embed.weight[orbit]
        grid = TokenGrid(dates=t, groups=len(slots), rows=h, cols=w)
        mask = repeat(valid, "b t h w -> b (t g h w)", g=grid.groups)
        coords = self._coords(image, tok, groups, grid)
        return Tokens(tokens, mask, coords, grid, groups, image.sensor, 1)

    @staticmethod
    def _coords(
        image: ChannelImage, tok: PatchTokenizer, groups: tuple[tuple[str, ...], ...], grid: TokenGrid
    ) -> TokenCoords:
        device, b = image.values.device, image.values.shape[0]
        t_idx, g_idx, r_idx, c_idx = (
            x.flatten()
            for x in torch.meshgrid(
                torch.arange(grid.dates, device=device),
                torch.arange(grid.groups, device=device),
                torch.arange(grid.rows, device=device),
                torch.arange(grid.cols, device=device),
                indexing="ij",
            )
        )
        by_key = {c.key: c for c in tok.universe}
        nm = torch.tensor([_mean_wavelength([by_key[k] for k in g]) for g in groups], device=device)
        time = repeat(image.times.to(device), "b t -> b (t g h w)", g=grid.groups, h=grid.rows, w=grid.cols)
        sensor = torch.full((b, grid.size), tok.sensors.index(image.sensor), device=device, dtype=torch.long)
        return TokenCoords(
            t=t_idx.expand(b, -1),
            time=time,
            group=g_idx.expand(b, -1),
            spectral_nm=nm[g_idx].expand(b, -1),
            row=r_idx.expand(b, -1),
            col=c_idx.expand(b, -1),
            sensor=sensor,
        )


def _mean_wavelength(channels: Sequence[Channel]) -> float:
    wl = [c.wavelength_nm for c in channels if c.wavelength_nm is not None]
    return sum(wl) / len(wl) if wl else float("nan")


class CovariateTokenizer(nn.Module):
    """Static ``[B,S]`` and per-date ``[B,T',K]`` covariates as tokens of width ``D`` (see the module doc).

    Args:
        dim: token width ``D``.
        static: names of the static covariates, in input order.
        dynamic: names of the per-date covariates, in input order.

    """

    def __init__(self, dim: int, static: Sequence[str] = (), dynamic: Sequence[str] = ()) -> None:
        super().__init__()
        self.dim = dim
        self.static_names = tuple(static)
        self.dynamic_names = tuple(dynamic)
        s, k = len(self.static_names), len(self.dynamic_names)
        self.static_weight = nn.Parameter(torch.randn(s, dim) * 0.02)
        self.static_bias = nn.Parameter(torch.randn(s, dim) * 0.02)
        self.dynamic_weight = nn.Parameter(torch.randn(k, dim) * 0.02)
        self.dynamic_bias = nn.Parameter(torch.randn(k, dim) * 0.02)
        # (mean, std) per covariate, from the training split; saved with the weights
        self.register_buffer("static_stats", torch.stack([torch.zeros(s), torch.ones(s)]))
        self.register_buffer("dynamic_stats", torch.stack([torch.zeros(k), torch.ones(k)]))

    def no_weight_decay(self) -> set[str]:
        """The per-covariate embeddings take no weight decay."""
        return {"static_weight", "static_bias", "dynamic_weight", "dynamic_bias"}

    def set_statistics(
        self, static: Mapping[str, tuple[float, float]], dynamic: Mapping[str, tuple[float, float]]
    ) -> None:
        """Adopt ``{name: (mean, std)}`` of each covariate (a std of 0 is taken as 1).

        Raises:
            ModelConfigError: a covariate of this tokenizer without statistics.

        """
        for names, given, buffer in (
            (self.static_names, static, self.get_buffer("static_stats")),
            (self.dynamic_names, dynamic, self.get_buffer("dynamic_stats")),
        ):
            missing = [n for n in names if n not in given]
            if missing:
                raise ModelConfigError(f"no statistics for covariates {missing}; given: {sorted(given)}")
            for i, n in enumerate(names):
                mean, std = given[n]
                buffer[0, i] = float(mean)
                buffer[1, i] = float(std) if std > 0 else 1.0

    def statistics(self) -> dict[str, dict[str, tuple[float, float]]]:
        """The statistics in use: ``{"static": {name: (mean, std)}, "dynamic": {...}}``."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for kind, names, buffer in (
            ("static", self.static_names, self.get_buffer("static_stats")),
            ("dynamic", self.dynamic_names, self.get_buffer("dynamic_stats")),
        ):
            out[kind] = {n: (float(buffer[0, i]), float(buffer[1, i])) for i, n in enumerate(names)}
        return out

    def forward(self, static: Tensor, dynamic: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Tokens of the covariates.

        Args:
            static: ``[B,S]`` raw values (NaN: missing).
            dynamic: ``[B,T',K]`` raw values (NaN: missing or padded).

        Returns:
            ``(static tokens [B,S,D], static valid [B,S], dynamic tokens [B,T',K,D], dynamic valid
            [B,T',K])``;
            invalid tokens are zero.

        """
        if static.shape[-1] != len(self.static_names) or (
            dynamic.numel() and dynamic.shape[-1] != len(self.dynamic_names)
        ):
            raise ModelConfigError(
                f"covariates: got {static.shape[-1]} static and {dynamic.shape[-1]} per-date values, the "
                f"tokenizer was built for {list(self.static_names)} and {list(self.dynamic_names)}"
            )
        s_stats, d_stats = self.get_buffer("static_stats"), self.get_buffer("dynamic_stats")
        s_ok = torch.isfinite(static)
        z = torch.where(s_ok, (static - s_stats[0]) / s_stats[1], static.new_zeros(()))
        s_tok = (z.unsqueeze(-1) * self.static_weight + self.static_bias) * s_ok.unsqueeze(-1)
        if not dynamic.numel():
            b, t = dynamic.shape[:2]
            return (
                s_tok,
                s_ok,
                dynamic.new_zeros((b, t, len(self.dynamic_names), self.dim)),
                dynamic.new_zeros((b, t, len(self.dynamic_names)), dtype=torch.bool),
            )
        d_ok = torch.isfinite(dynamic)
        zd = torch.where(d_ok, (dynamic - d_stats[0]) / d_stats[1], dynamic.new_zeros(()))
        d_tok = (zd.unsqueeze(-1) * self.dynamic_weight + self.dynamic_bias) * d_ok.unsqueeze(-1)
        return s_tok, s_ok, d_tok, d_ok


__all__ = ["CovariateTokenizer", "PixelTokenizer"]
