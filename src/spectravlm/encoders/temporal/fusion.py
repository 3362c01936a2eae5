"""Sensor fusion across time: S1 and S2 series, each on its own dates, in one temporal encoder.

Axis legend: B batch, T_s dates of sensor group s, T = sum of T_s, N locations, C_s input width of s,
D model width.

Each sensor group (``"s2"``, ``"s1_asc"``, ``"s1_desc"``, ...) brings per-date tokens ``[B,T_s,N,D]`` on its
own acquisition days. The fusion adds a learned *sensor embedding* to the tokens of each group and
concatenates the groups along time, ``[B,T,N,D]``; the temporal encoder then adds the *date encoding* of
each token's own day and attends across all of them. A date is therefore told apart by what took it and
when, never by where it sits in the sequence: an S1 scene two days after an S2 scene is two days after
it, whatever the order of the groups. The elapsed-time reference is the first valid date over all groups.

Any group may be absent, either left out of the input mapping or present with every token invalid
(a fully clouded S2 year); the output is then what the other groups give. At least one group must be
given. Groups must share the location axis ``N`` (same grid and patch size).

With ``in_dims`` the fusion first maps each group's own features (e.g. raw bands per pixel, 10 for S2 and
2 for S1) to the common width with a per-group linear layer; without it the inputs are already tokens of
width ``D`` (from the tokenizers / spatial encoder).

References:
    * Garnot et al., "Multi-modal temporal attention models for crop mapping from satellite time
      series" (early fusion of S1/S2 dates in one temporal attention), 2022.
      https://arxiv.org/abs/2112.07558

"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from spectravlm.encoders.temporal import TemporalEncoder
from spectravlm.encoders.temporal.ltae import LTAE
from spectravlm.encoders.temporal.types import DatedTokens, TemporalOutput, zero_invalid
from spectravlm.errors import ModelConfigError


class SensorFusion(nn.Module):
    """Several sensor groups' dated tokens -> one temporal encoding (sensor embedding + date encoding).

    Args:
        encoder: the temporal encoder that runs on the fused sequence; its input width is ``D``.
        sensors: the sensor group names this model knows, e.g. ``("s2", "s1_asc", "s1_desc")``;
            each gets one learned embedding.
        in_dims: per group in ``sensors``, the input feature width ``C_s``, to be mapped to ``D`` by a
            linear layer; ``None`` when the inputs already have width ``D``.

    """

    def __init__(
        self,
        encoder: TemporalEncoder,
        sensors: tuple[str, ...] = ("s2", "s1_asc", "s1_desc"),
        in_dims: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if not sensors or len(set(sensors)) != len(sensors):
            raise ModelConfigError(f"sensors must be distinct group names, got {sensors}")
        if in_dims is not None and len(in_dims) != len(sensors):
            raise ModelConfigError(f"in_dims {in_dims} must give one width per sensor group of {sensors}")
        self.encoder = encoder
        self.sensors = tuple(sensors)
        self.dim = encoder.in_dim if isinstance(encoder, LTAE) else encoder.dim
        self.out_dim = encoder.out_dim
        self.sensor_embed = nn.Parameter(torch.zeros(len(sensors), self.dim))
        nn.init.trunc_normal_(self.sensor_embed, std=0.02)
        self.in_proj: nn.ModuleDict | None = None
        if in_dims is not None:
            pairs = zip(sensors, in_dims, strict=True)
            self.in_proj = nn.ModuleDict({s: nn.Linear(c, self.dim) for s, c in pairs})

    def forward(self, inputs: Mapping[str, DatedTokens]) -> TemporalOutput:
        """Fuse the groups given and encode them.

        Args:
            inputs: per sensor group name (a subset of ``sensors``, at least one), its
                :class:`DatedTokens`: tokens ``[B,T_s,N,C_s]``, times ``[B,T_s]``, valid ``[B,T_s,N]``.

        Returns:
            The encoder's :class:`TemporalOutput` over all groups' dates (``sequence``, when the encoder
            returns one, runs over the concatenated dates in the order of ``sensors``).

        """
        unknown = [g for g in inputs if g not in self.sensors]
        if unknown:
            raise ModelConfigError(f"sensor groups {unknown} are unknown here; known: {self.sensors}")
        groups = [g for g in self.sensors if g in inputs]
        if not groups:
            raise ModelConfigError(f"no sensor group given; expected at least one of {self.sensors}")
        shapes = {g: (inputs[g].tokens.shape[0], inputs[g].tokens.shape[2]) for g in groups}
        if len(set(shapes.values())) > 1:
            raise ModelConfigError(f"sensor groups must share batch and locations (B, N); got {shapes}")
        grids = {inputs[g].grid for g in groups} - {None}
        tokens, times, valid = [], [], []
        for g in groups:
            item = inputs[g]
            x = zero_invalid(item.tokens, item.valid)
            if self.in_proj is not None:
                x = self.in_proj[g](x)
            elif x.shape[-1] != self.dim:
                raise ModelConfigError(
                    f"sensor group {g!r}: tokens have width {x.shape[-1]}, expected {self.dim} "
                    "(give in_dims to map raw features to the model width)"
                )
            tokens.append(x + self.sensor_embed[self.sensors.index(g)])
            times.append(item.times)
            valid.append(item.valid)
        fused = torch.cat(tokens, dim=1), torch.cat(times, dim=1), torch.cat(valid, dim=1)
        out: TemporalOutput = self.encoder(*fused)
        if len(grids) == 1:
            out.grid = grids.pop()
        return out
