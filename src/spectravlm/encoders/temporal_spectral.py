"""Images to one space-time encoding: the sensor-native encoder per date, then fusion over time.

Axis legend: B batch, T dates, N patch locations of one date, D width.

This is the factorised model for imagery. Its spatial stage is
:meth:`spectravlm.encoders.spectral.SpectralEncoder.forward_dates`: every date of every sensor group is
tokenized (any band subset, SAR by polarisation) and encoded on its own, giving per-date token grids
``[B,T,N,D]`` with token masks (a patch with too few valid pixels is invalid). Its temporal stage is a
:class:`~spectravlm.encoders.temporal.fusion.SensorFusion` over those grids: a sensor-group embedding, the
date
encoding of each acquisition day, and a temporal encoder (:class:`~.ltae.LTAE` or
:class:`~.transformer.TemporalTransformer`) per location.

Example:
    >>> from spectravlm.encoders.spectral import spectral_encoder_test
    >>> from spectravlm.encoders.temporal.ltae import LTAE
    >>> model = SpectralTemporalEncoder(
    ...     spectral_encoder_test(sensors=("sentinel2_l2a", "sentinel1_grd")),
    ...     LTAE(in_dim=32, d_model=32, num_heads=4, d_k=4, mlp_dims=(32,)),
    ... )

"""

from __future__ import annotations

from torch import nn

from spectravlm.encoders.spectral import SpectralEncoder
from spectravlm.encoders.temporal import TemporalEncoder
from spectravlm.encoders.temporal.fusion import SensorFusion
from spectravlm.encoders.temporal.types import TemporalOutput
from spectravlm.errors import ModelConfigError
from spectravlm.stack import SensorStack


class SpectralTemporalEncoder(nn.Module):
    """Sensor-native spatial encoder per date, then sensor fusion and a temporal encoder per location.

    Args:
        spectral: the per-date spatial encoder; its width ``D`` is the temporal encoder's input width.
        temporal: the temporal encoder over each location's fused dates.
        groups: the sensor group names of the batches (``SensorStack`` keys) this model knows; each
            gets a learned group embedding (so ``s1_asc`` and ``s1_desc`` are told apart).

    """

    def __init__(
        self,
        spectral: SpectralEncoder,
        temporal: TemporalEncoder,
        groups: tuple[str, ...] = ("s2", "s1_asc", "s1_desc"),
    ) -> None:
        super().__init__()
        self.spectral = spectral
        self.fusion = SensorFusion(temporal, sensors=groups)
        if self.fusion.dim != spectral.dim:
            raise ModelConfigError(
                f"temporal encoder input width {self.fusion.dim} differs from the spectral encoder's "
                f"width {spectral.dim}"
            )
        self.out_dim = self.fusion.out_dim

    def forward(self, stack: SensorStack) -> TemporalOutput:
        """Encode a batch of image time series.

        Args:
            stack: per sensor group (a subset of ``groups``), a series ``[B,T_s,C_s,H,W]`` in the units
                the spectral encoder accepts (S2 ``raw``/``reflectance``, S1 ``dB``/``linear``).

        Returns:
            :class:`TemporalOutput` over the patch grid: ``locations [B,h*w,D']``, ``pooled [B,D']``.

        """
        per_date = self.spectral.forward_dates(stack)
        return self.fusion({g: d.to_dated() for g, d in per_date.items()})
