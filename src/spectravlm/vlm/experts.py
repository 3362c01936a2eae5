"""Number experts: modules that state a quantity of a scene's region, with its units, for the number gate.

An expert takes scenes (a :class:`~spectravlm.stack.SensorStack`, its batch rows are scenes) and one region
mask per scene (``[s, H, W]``, True on the pixels the question is about) and returns one value per scene in
its :attr:`~RegionExpert.units`, with a flag saying where it could give one::

    expert(scenes, regions) -> ExpertValues(values [s] float32, available [s] bool)

Two kinds (:class:`ExpertConfig.kind`):

* ``statistic``: computed from the scene itself, no weights (:data:`STATISTICS`): the cloud share, the number
  of observed dates, the mean backscatter, the change of NDVI or backscatter between the first and last
  date of the scene. Every definition is written out in :data:`STATISTICS` and is the one the instruction
  generator (:mod:`spectravlm.data.qa`) uses for its answers.
* ``head``: a regression model (``predictor``) evaluated on the scene and reduced over the region: the dense
  AGB head averaged (``reduce="mean"``) or maximised (``"max"``) over the asked window, or a scalar head
  (one value per scene, the region is not used). The predictor is any ``nn.Module`` that maps a
  ``SensorStack`` to ``[s, H, W]`` / ``[s, 1, H, W]`` maps or ``[s]`` / ``[s, 1]`` values (or an object
  with such a ``mean``, as regression outputs are), built from ``class_path`` and ``init_args`` so that a
  saved model rebuilds it. :class:`LinearDenseRegressor` is the library's own minimal dense head.

**Units are facts.** Every expert declares its quantity and units; :func:`canonical_units` knows the
spellings (``t/ha`` and ``Mg/ha`` are one unit, ``%`` and ``percent`` another) and refuses any it does not
know, and :func:`check_units` refuses an expert whose units differ from what a question asks.

Axis legend: ``s`` scenes, ``T`` dates, ``C`` bands, ``H``/``W`` pixels, ``F`` features per pixel.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from spectravlm.encoders.spectral import SpectralEncoder, SpectralEncoderConfig
from spectravlm.errors import ModelConfigError, UnknownUnitError
from spectravlm.sensors import get_sensor
from spectravlm.stack import SensorSeries, SensorStack

ExpertKind = Literal["statistic", "head"]
Reduce = Literal["mean", "max", "value"]

# ---- units ---------------------------------------------------------------------------------------------

_UNIT_SPELLINGS: dict[str, str] = {
    # mass per area (AGB): a tonne is a megagram
    "t/ha": "t/ha", "t ha-1": "t/ha", "t ha^-1": "t/ha", "t·ha⁻¹": "t/ha", "tonnes/ha": "t/ha",
    "t/hectare": "t/ha", "Mg/ha": "t/ha", "Mg ha-1": "t/ha", "Mg ha^-1": "t/ha", "Mg·ha⁻¹": "t/ha",
    # shares
    "%": "%", "percent": "%", "per cent": "%",
    # backscatter
    "dB": "dB", "db": "dB", "decibel": "dB",
    # counts and unitless ratios
    "count": "count", "dates": "count", "1": "1", "": "1", "unitless": "1", "dimensionless": "1",
}  # fmt: skip
"""Spellings of the units numbers are stated in, mapped to one canonical name (case matters: mg is not Mg)."""


def canonical_units(text: str) -> str:
    """The canonical name of a unit spelling (``Mg/ha`` -> ``t/ha``).

    Raises:
        UnknownUnitError: A spelling that is not known (never a guess).

    """
    key = str(text).strip()
    if key in _UNIT_SPELLINGS:
        return _UNIT_SPELLINGS[key]
    known = [*sorted(set(_UNIT_SPELLINGS.values()) - {"1"}), "1 (unitless)"]
    raise UnknownUnitError(
        f"units {text!r} are not known; known: {', '.join(known)} (and their spellings, e.g. Mg/ha for t/ha)"
    )


def same_units(a: str, b: str) -> bool:
    """Whether two unit spellings name one unit (``t/ha`` and ``Mg/ha`` do; ``t/ha`` and ``%`` do not)."""
    return canonical_units(a) == canonical_units(b)


def check_units(expert: str, expert_units: str, question: str, question_units: str) -> None:
    """Refuse an expert whose units differ from those a question asks for.

    Raises:
        UnknownUnitError: Different units (or an unknown spelling), naming both sides.

    """
    if not same_units(expert_units, question_units):
        raise UnknownUnitError(
            f"expert {expert!r} states values in {expert_units!r}, but {question} questions ask for "
            f"{question_units!r}; give the expert a model of that quantity in {question_units!r}"
        )


# ---- configs -------------------------------------------------------------------------------------------


@dataclass
class ExpertConfig:
    """One number expert of the gate (JSON; saved with the model).

    Attributes:
        name: The source's name (shown beside every number it states): ``agb_mean``, ``cloud_share``, ...
        kind: ``statistic`` (computed from the scene) or ``head`` (a regression model).
        quantity: What the expert measures (``agb``, ``cloud_share``, ``valid_dates``, ``backscatter``,
            ``ndvi``): questions about a quantity check their units against its experts'.
        units: Units of the values it states.
        statistic: For ``statistic`` experts, a key of :data:`STATISTICS`.
        sensor_kind: For statistics, the sensor kind whose first group of the scene they read
            (``optical`` or ``sar``).
        band: For backscatter statistics, the polarisation (``VV``, ``VH``).
        reduce: For ``head`` experts: ``mean`` or ``max`` of a dense map over the region, ``value`` for a
            scalar head (one value per scene; the region is not used).
        predictor: For ``head`` experts: ``{"class_path": ..., "init_args": {...}}`` that rebuilds the
            predictor (set from the module when the model is built with one).
        source: For ``head`` experts: where its weights come from (a saved predictor folder or a regression
            checkpoint), kept as provenance; a saved model carries the weights itself.
        trainable: Train the expert's weights with the VLM (default: frozen, in eval mode).

    """

    name: str
    kind: ExpertKind
    quantity: str
    units: str
    statistic: str | None = None
    sensor_kind: str | None = None
    band: str | None = None
    reduce: Reduce = "mean"
    predictor: dict[str, Any] | None = None
    source: str | None = None
    trainable: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name == LM_SOURCE or not self.name.replace("_", "").isalnum():
            raise ModelConfigError(
                f"expert name {self.name!r} must be letters, digits and '_' and not {LM_SOURCE!r} "
                "(the LLM's own)"
            )
        if self.kind not in ("statistic", "head"):
            raise ModelConfigError(
                f"expert {self.name!r}: kind must be 'statistic' or 'head'; got {self.kind!r}"
            )
        canonical_units(self.units)  # unknown spellings are an error here already
        if self.kind == "statistic":
            if self.statistic not in STATISTICS:
                raise ModelConfigError(
                    f"expert {self.name!r}: statistic {self.statistic!r} is not known; known: "
                    f"{', '.join(STATISTICS)}"
                )
            spec = STATISTICS[self.statistic]
            if self.sensor_kind is None:
                self.sensor_kind = spec.sensor_kind
            if spec.sensor_kind is not None and self.sensor_kind != spec.sensor_kind:
                raise ModelConfigError(
                    f"expert {self.name!r}: {self.statistic} reads {spec.sensor_kind} data, "
                    f"not {self.sensor_kind}"
                )
            if self.sensor_kind not in ("optical", "sar"):
                raise ModelConfigError(
                    f"expert {self.name!r}: sensor_kind must be 'optical' or 'sar'; got {self.sensor_kind!r}"
                )
            if spec.needs_band and not self.band:
                raise ModelConfigError(f"expert {self.name!r}: {self.statistic} needs band (VV or VH)")
            check_units(self.name, self.units, self.statistic, spec.units)
        elif self.reduce not in ("mean", "max", "value"):
            raise ModelConfigError(
                f"expert {self.name!r}: reduce must be 'mean', 'max' or 'value'; got {self.reduce!r}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExpertConfig:
        """Build from a dict (JSON, a YAML config), refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelConfigError(f"unknown expert fields {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


LM_SOURCE = "lm"
"""Name of the LLM's own number head (xVal) among the gate's sources."""


# ---- outputs and the expert base -----------------------------------------------------------------------


@dataclass
class ExpertValues:
    """What an expert states about each scene.

    Attributes:
        values: ``[s]`` float32 values in the expert's units (0 where not available).
        available: ``[s]`` bool: the expert could state a value (its sensor is in the scene, the region has
            observations).

    """

    values: Tensor
    available: Tensor


class RegionExpert(nn.Module):
    """Base of the number experts: ``forward(scenes, regions) -> ExpertValues`` (see the module docstring).

    Args:
        config: The expert's config (name, quantity, units, ...).

    """

    def __init__(self, config: ExpertConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def name(self) -> str:
        """The source name shown beside the numbers this expert states."""
        return self.config.name

    @property
    def units(self) -> str:
        """Units of the values."""
        return self.config.units

    @property
    def quantity(self) -> str:
        """What the expert measures."""
        return self.config.quantity

    def forward(self, scenes: SensorStack, regions: Tensor) -> ExpertValues:
        """``[s]`` values of the scenes' regions (``regions``: ``[s, H, W]`` bool)."""
        raise NotImplementedError


# ---- statistics of the scene ----------------------------------------------------------------------------


def _first_group(scenes: SensorStack, kind: str) -> SensorSeries | None:
    """The first sensor group of ``kind`` in the stack's order (``None`` when there is none)."""
    for series in scenes.series.values():
        if get_sensor(series.sensor).kind == kind:
            return series
    return None


def observed_dates(series: SensorSeries) -> Tensor:
    """``[s, T]`` True at real dates (padding dates have ``times == 0``, see :mod:`spectravlm.stack`)."""
    return series.times != 0


def physical_values(series: SensorSeries, bands: Sequence[str]) -> Tensor:
    """``[s, T, k, H, W]`` float32 physical values of ``bands`` (SAR in dB, whatever the stored unit)."""
    index = [series.bands.index(get_sensor(series.sensor).canonical_name(b)) for b in bands]
    x = series.values[:, :, index].float() * series.scale + series.offset
    if series.units == "linear":
        x = 10.0 * torch.log10(x.clamp_min(1e-10))
    return x


def _first_last(real: Tensor) -> tuple[Tensor, Tensor]:
    """Indices ``[s]`` of the first and last real date of each scene (0 when none)."""
    t = torch.arange(real.shape[1], device=real.device)
    first = torch.where(real, t, real.shape[1]).min(1).values.clamp(max=real.shape[1] - 1)
    last = torch.where(real, t, -1).max(1).values.clamp(min=0)
    return first, last


def _pick(x: Tensor, index: Tensor) -> Tensor:
    """``x[i, index[i]]`` for each scene ``i``."""
    return x[torch.arange(x.shape[0], device=x.device), index]


def _masked_mean(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the trailing axes where ``mask`` (``[s, ...]``), and whether any pixel counted."""
    m = mask.flatten(1)
    n = m.sum(1)
    total = torch.where(m, x.flatten(1), 0.0).sum(1)
    return total / n.clamp_min(1), n > 0


def cloud_share(series: SensorSeries, regions: Tensor, band: str | None = None) -> ExpertValues:
    """Percent of the region's pixel observations (region pixels x real dates) that are not clear.

    A pixel of a date is clear when it is valid (not cloud by the store's threshold, not nodata); the share
    counts every real date of the group in the scene.
    """
    real = observed_dates(series)[:, :, None, None] & regions[:, None]  # (s, T, H, W)
    total = real.flatten(1).sum(1)
    clear = (series.valid & real).flatten(1).sum(1)
    share = 100.0 * (1.0 - clear.float() / total.clamp_min(1).float())
    return ExpertValues(torch.where(total > 0, share, 0.0), total > 0)


def valid_dates(series: SensorSeries, regions: Tensor, band: str | None = None) -> ExpertValues:
    """How many real dates of the group have at least one valid pixel in the region."""
    seen = (series.valid & regions[:, None]).flatten(2).any(2) & observed_dates(series)  # (s, T)
    return ExpertValues(seen.sum(1).float(), torch.ones_like(seen[:, 0]))


def backscatter_mean(series: SensorSeries, regions: Tensor, band: str | None = None) -> ExpertValues:
    """Mean backscatter in dB of ``band`` over the valid region pixels of every real date."""
    assert band is not None
    x = physical_values(series, [band])[:, :, 0]  # (s, T, H, W)
    mask = series.valid & regions[:, None] & observed_dates(series)[:, :, None, None]
    mean, ok = _masked_mean(x, mask)
    return ExpertValues(torch.where(ok, mean, 0.0), ok)


def backscatter_change(series: SensorSeries, regions: Tensor, band: str | None = None) -> ExpertValues:
    """Mean change in dB of ``band`` from the first to the last real date, region pixels valid on both."""
    assert band is not None
    return _change(series, physical_values(series, [band])[:, :, 0], regions)


def ndvi_change(series: SensorSeries, regions: Tensor, band: str | None = None) -> ExpertValues:
    """Mean change of NDVI ``(B08 - B04) / (B08 + B04)`` (reflectance) from the first to the last real date.

    Over the region pixels valid on both dates whose ``B08 + B04`` is positive on both.
    """
    x = physical_values(series, ["B04", "B08"])
    red, nir = x[:, :, 0], x[:, :, 1]
    total = nir + red
    ndvi = (nir - red) / torch.where(total > 0, total, 1.0)
    return _change(series, ndvi, regions, extra=total > 0)


def _change(series: SensorSeries, x: Tensor, regions: Tensor, extra: Tensor | None = None) -> ExpertValues:
    real = observed_dates(series)
    first, last = _first_last(real)
    ok = series.valid if extra is None else series.valid & extra
    mask = _pick(ok, first) & _pick(ok, last) & regions
    mean, any_pixel = _masked_mean(_pick(x, last) - _pick(x, first), mask)
    usable = any_pixel & (real.sum(1) >= 2)
    return ExpertValues(torch.where(usable, mean, 0.0), usable)


@dataclass(frozen=True)
class Statistic:
    """A statistic of the scene: its function, the sensor kind it reads, its units."""

    function: Any
    sensor_kind: str | None
    units: str
    needs_band: bool = False


STATISTICS: dict[str, Statistic] = {
    "cloud_share": Statistic(cloud_share, "optical", "%"),
    "valid_dates": Statistic(valid_dates, None, "count"),
    "backscatter_mean": Statistic(backscatter_mean, "sar", "dB", needs_band=True),
    "backscatter_change": Statistic(backscatter_change, "sar", "dB", needs_band=True),
    "ndvi_change": Statistic(ndvi_change, "optical", "1"),
}
"""The scene statistics an expert can state (see each function's docstring for its definition)."""


class StatisticExpert(RegionExpert):
    """A statistic of the scene's first group of one sensor kind (no weights)."""

    def forward(self, scenes: SensorStack, regions: Tensor) -> ExpertValues:
        """Values ``[s]`` (unavailable where the scene has no group of the sensor kind)."""
        assert self.config.statistic is not None and self.config.sensor_kind is not None
        series = _first_group(scenes, self.config.sensor_kind)
        s = scenes.batch_size
        if series is None:
            zeros = torch.zeros(s, device=regions.device)
            return ExpertValues(zeros, zeros.bool())
        if self.config.band is not None and get_sensor(series.sensor).canonical_name(
            self.config.band
        ) not in (series.bands):
            zeros = torch.zeros(s, device=regions.device)
            return ExpertValues(zeros, zeros.bool())
        out = STATISTICS[self.config.statistic].function(series, regions.bool(), self.config.band)
        return ExpertValues(out.values.float(), out.available.bool())


# ---- regression heads -----------------------------------------------------------------------------------


def predictor_spec(module: nn.Module) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` that rebuild ``module`` (its ``init_args`` or a task's hparams).

    Raises:
        ModelConfigError: A module that says neither how it was built nor has hyperparameters.

    """
    cls = type(module)
    path = f"{cls.__module__}.{cls.__qualname__}"
    args = getattr(module, "init_args", None)
    if args is None and hasattr(module, "hparams"):
        args = dict(getattr(module, "hparams"))  # noqa: B009 (a Module attribute, typed as one)
    if not isinstance(args, Mapping):
        raise ModelConfigError(
            f"the expert predictor {path} cannot be saved: give it an init_args dict (its constructor "
            "arguments) or save_hyperparameters() as a LightningModule does"
        )
    return {"class_path": path, "init_args": dict(args)}


def build_predictor(spec: Mapping[str, Any]) -> nn.Module:
    """The predictor ``spec`` (from :func:`predictor_spec`) describes, with fresh weights.

    Raises:
        ModelConfigError: A class that cannot be imported, or arguments it does not take.

    """
    path = str(spec.get("class_path", ""))
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ModelConfigError(f"expert predictor class {path!r} cannot be imported: {err}") from err
    try:
        built = cls(**dict(spec.get("init_args") or {}))
    except TypeError as err:
        raise ModelConfigError(f"expert predictor {path}: {err}") from err
    if not isinstance(built, nn.Module):
        raise ModelConfigError(f"expert predictor {path} is not an nn.Module")
    return built


def _as_values(out: Any) -> Tensor:
    """A predictor's output as a tensor: ``[s, H, W]`` (dense) or ``[s]`` (scalar)."""
    if not isinstance(out, Tensor):
        out = getattr(out, "mean", None)
        if not isinstance(out, Tensor):
            raise ModelConfigError("an expert predictor must return a tensor, or an object whose mean is one")
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim not in (1, 3):
        raise ModelConfigError(
            f"an expert predictor must give [s, H, W] or [s, 1, H, W] maps or [s] / [s, 1] values; got "
            f"{tuple(out.shape)}"
        )
    return out.float()


class HeadExpert(RegionExpert):
    """A regression model evaluated on the scene, reduced over the region (see the module docstring).

    Args:
        config: The expert's config (``kind="head"``; ``predictor`` is set from ``predictor``).
        predictor: The regression model (``SensorStack -> maps or values``, in ``config.units``).

    """

    def __init__(self, config: ExpertConfig, predictor: nn.Module) -> None:
        super().__init__(config)
        self.predictor = predictor
        config.predictor = predictor_spec(predictor)
        predictor.requires_grad_(config.trainable)
        self.train(self.training)  # a frozen expert starts (and stays) in eval mode

    def train(self, mode: bool = True) -> HeadExpert:
        """Set training mode; a frozen expert stays in eval mode."""
        super().train(mode and self.config.trainable)
        return self

    def forward(self, scenes: SensorStack, regions: Tensor) -> ExpertValues:
        """Values ``[s]``: the map's mean or max over each region, or the scalar head's value."""
        with torch.set_grad_enabled(self.config.trainable and torch.is_grad_enabled()):
            out = _as_values(self.predictor(scenes))
        region = regions.bool()
        if out.ndim == 1:
            if self.config.reduce != "value":
                raise ModelConfigError(
                    f"expert {self.name!r} has a scalar predictor; set reduce='value' (it states one value "
                    "per scene)"
                )
            return ExpertValues(out, torch.isfinite(out))
        if self.config.reduce == "value":
            raise ModelConfigError(f"expert {self.name!r} has a dense predictor; set reduce='mean' or 'max'")
        if tuple(out.shape[-2:]) != tuple(region.shape[-2:]):
            raise ModelConfigError(
                f"expert {self.name!r} predicted {tuple(out.shape[-2:])} px maps for "
                f"{tuple(region.shape[-2:])} "
                "px regions"
            )
        if self.config.reduce == "mean":
            value, ok = _masked_mean(out, region)
        else:
            value = torch.where(region, out, -torch.inf).flatten(1).max(1).values
            ok = region.flatten(1).any(1)
        ok = ok & torch.isfinite(value)
        return ExpertValues(torch.where(ok, value, 0.0), ok)


PREDICTOR_SPEC = "predictor.json"
PREDICTOR_WEIGHTS = "predictor.safetensors"


def save_predictor(module: nn.Module, path: str | Path, overwrite: bool = False) -> Path:
    """Write a predictor (its spec and weights) into folder ``path``, built aside and swapped in.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is off.

    """
    import json

    from safetensors.torch import save_model

    from spectravlm.io import AtomicDirectory, atomic_write_text

    with AtomicDirectory(path, overwrite=overwrite, what="predictor folder") as tmp:
        atomic_write_text(json.dumps(predictor_spec(module), indent=2) + "\n", tmp / PREDICTOR_SPEC)
        save_model(module, str(tmp / PREDICTOR_WEIGHTS))
    return Path(path)


def load_predictor(path: str | Path) -> nn.Module:
    """Load a predictor written by :func:`save_predictor` (weights strictly).

    Raises:
        ModelConfigError: Not a predictor folder, or weights that do not fit its spec.

    """
    import json

    from safetensors.torch import load_model

    folder = Path(path)
    if not (folder / PREDICTOR_SPEC).is_file():
        raise ModelConfigError(f"{folder} is not a predictor folder: {PREDICTOR_SPEC} is missing")
    module = build_predictor(json.loads((folder / PREDICTOR_SPEC).read_text()))
    missing, unexpected = load_model(module, str(folder / PREDICTOR_WEIGHTS), strict=False)
    if missing or unexpected:
        raise ModelConfigError(
            f"{folder}: weights do not fit: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    return module.eval()


def build_expert(config: ExpertConfig, predictor: nn.Module | None = None) -> RegionExpert:
    """The expert ``config`` describes; ``head`` experts take ``predictor`` or rebuild it from the config.

    Raises:
        ModelConfigError: A head expert without a predictor or a spec of one.

    """
    if config.kind == "statistic":
        return StatisticExpert(config)
    if predictor is None:
        if config.predictor is None:
            raise ModelConfigError(
                f"head expert {config.name!r} has no predictor: pass the model, or a predictor spec "
                "(class_path, init_args)"
            )
        predictor = build_predictor(config.predictor)
    return HeadExpert(config, predictor)


# ---- the library's minimal dense head --------------------------------------------------------------------


def pixel_features(stack: SensorStack, sensors: Sequence[str]) -> Tensor:
    """``[s, F, H, W]`` per-pixel input summary with one fixed layout per list of catalogue sensors.

    For each sensor (its first group in the stack), each of its catalogue bands: the mean physical value
    over the valid real dates (SAR in dB; 0 where a pixel has none, or the band or sensor is absent), then the
    share of the group's real dates on which the pixel is valid.
    """
    series0 = next(iter(stack.series.values()))
    s, h, w = series0.values.shape[0], *series0.values.shape[-2:]
    device = series0.values.device
    parts = []
    for name in sensors:
        sensor = get_sensor(name)
        catalogue = [b.name for b in sensor.bands]
        series = next((x for x in stack.series.values() if x.sensor == sensor.name), None)
        if series is None:
            parts.append(torch.zeros(s, len(catalogue) + 1, h, w, device=device))
            continue
        present = [b for b in catalogue if b in series.bands]
        x = physical_values(series, present)  # (s, T, k, H, W)
        ok = (series.valid & observed_dates(series)[:, :, None, None]).unsqueeze(2)  # (s, T, 1, H, W)
        n = ok.sum(1)
        mean = torch.where(ok, x, 0.0).sum(1) / n.clamp_min(1)
        full = torch.zeros(s, len(catalogue), h, w, device=device)
        full[:, [catalogue.index(b) for b in present]] = mean
        real = observed_dates(series).sum(1).clamp_min(1)[:, None, None, None]
        parts += [full, n / real]
    return torch.cat(parts, dim=1).float()


class LinearDenseRegressor(nn.Module):
    """A per-pixel linear regression on the encoder's location tokens and each pixel's own input summary.

    Each pixel's features are its patch location's token (``EncoderOutput.locations()``, repeated over the
    patch's pixels) and :func:`pixel_features` over the encoder's sensors, standardised; one linear layer
    gives the target in its units. It is the minimal dense regression head of the library, fit in closed
    form by :meth:`fit` (``fitted`` says whether it was); the Mixer heads of ``spectravlm.heads`` are the
    full ones.

    Args:
        encoder: The encoder's config (``SpectralEncoderConfig`` fields); its weights come with the state
            dict.

    """

    fitted: Tensor
    feature_mean: Tensor
    feature_std: Tensor

    def __init__(self, encoder: Mapping[str, Any]) -> None:
        super().__init__()
        self.encoder = SpectralEncoder(SpectralEncoderConfig.from_dict(dict(encoder)))
        self.sensors = tuple(self.encoder.config.sensors)
        width = self.encoder.dim + sum(len(get_sensor(n).bands) + 1 for n in self.sensors)
        self.linear = nn.Linear(width, 1)
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    @property
    def init_args(self) -> dict[str, Any]:
        """Constructor arguments (for :func:`predictor_spec`)."""
        return {"encoder": asdict(self.encoder.config)}

    def train(self, mode: bool = True) -> LinearDenseRegressor:
        """Set training mode; the encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, stack: SensorStack) -> Tensor:
        """``[s, F, H, W]`` standardised features of every pixel."""
        h, w = next(iter(stack.series.values())).values.shape[-2:]
        with torch.no_grad():
            loc = self.encoder.forward_features(stack).locations()
        p = loc.patch_size
        tokens = repeat(loc.image(), "s d h w -> s d (h p) (w q)", p=p, q=p)[..., :h, :w]
        x = torch.cat([tokens.float(), pixel_features(stack, self.sensors)], dim=1)
        return (x - self.feature_mean[:, None, None]) / self.feature_std[:, None, None]

    def forward(self, stack: SensorStack) -> Tensor:
        """``[s, H, W]`` predictions in the target's units."""
        x = self.features(stack)
        s, _, h, w = x.shape
        # one 2-D product: torch folds batched matmuls differently when weights require grad
        y = self.linear(rearrange(x, "s f h w -> (s h w) f"))
        return rearrange(y, "(s h w) 1 -> s h w", s=s, h=h, w=w)

    @torch.no_grad()
    def fit(
        self,
        stacks: Iterable[SensorStack],
        target: str,
        ridge: float = 1.0,
        max_pixels: int = 200_000,
        seed: int = 0,
    ) -> LinearDenseRegressor:
        """Fit by ridge regression (closed form, float64) on the finite target pixels of ``stacks``.

        Args:
            stacks: Training scenes with ``targets[target]`` ``[s, H, W]``.
            target: The target's name in the stacks.
            ridge: L2 penalty on the standardised features' weights.
            max_pixels: At most this many pixels enter the fit (a seeded random subset).
            seed: Seed of that subset.

        Returns:
            ``self``, fitted.

        Raises:
            ModelConfigError: Stacks without the target, or without a finite target pixel.

        """
        was = self.training
        self.eval()
        self.feature_mean.zero_()
        self.feature_std.fill_(1.0)
        xs, ys = [], []
        for stack in stacks:
            if target not in stack.targets:
                raise ModelConfigError(
                    f"the training scenes have no target {target!r}: {list(stack.targets)}"
                )
            stack = stack.to(self.feature_mean.device)
            x = rearrange(self.features(stack), "s f h w -> (s h w) f").double()
            y = stack.targets[target].flatten().double()
            keep = torch.isfinite(y) & torch.isfinite(x).all(1)
            xs.append(x[keep])
            ys.append(y[keep])
        if not ys or sum(len(y) for y in ys) == 0:
            raise ModelConfigError(f"no finite {target!r} target pixel to fit the regressor on")
        x, y = torch.cat(xs), torch.cat(ys)
        if len(y) > max_pixels:
            pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:max_pixels]
            x, y = x[pick.to(x.device)], y[pick.to(y.device)]
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - mean) / std
        a = z.T @ z + ridge * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        weight = torch.linalg.solve(a, z.T @ (y - y.mean()))
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(std.float())
        self.linear.weight.copy_(weight.float()[None])
        self.linear.bias.fill_(float(y.mean()))
        self.fitted.fill_(True)
        self.train(was)
        return self


def default_experts(
    optical: bool = True, sar: bool = True, sar_bands: Sequence[str] = ("VV", "VH")
) -> list[ExpertConfig]:
    """The scene-statistic experts for scenes with optical and/or SAR groups.

    The head experts are added by whoever has the regression model.
    """
    out: list[ExpertConfig] = []
    if optical:
        out += [
            ExpertConfig("cloud_share", "statistic", "cloud_share", "%", statistic="cloud_share"),
            ExpertConfig(
                "optical_dates",
                "statistic",
                "valid_dates",
                "count",
                statistic="valid_dates",
                sensor_kind="optical",
            ),
            ExpertConfig("ndvi_change", "statistic", "ndvi", "1", statistic="ndvi_change"),
        ]
    if sar:
        out.append(
            ExpertConfig(
                "sar_dates", "statistic", "valid_dates", "count", statistic="valid_dates", sensor_kind="sar"
            )
        )
        for band in sar_bands:
            low = band.lower()
            out += [
                ExpertConfig(
                    f"{low}_mean", "statistic", "backscatter", "dB", statistic="backscatter_mean", band=band
                ),
                ExpertConfig(
                    f"{low}_change",
                    "statistic",
                    "backscatter",
                    "dB",
                    statistic="backscatter_change",
                    band=band,
                ),
            ]
    return out


__all__ = [
    "LM_SOURCE",
    "STATISTICS",
    "ExpertConfig",
    "ExpertValues",
    "HeadExpert",
    "LinearDenseRegressor",
    "RegionExpert",
    "StatisticExpert",
    "build_expert",
    "build_predictor",
    "canonical_units",
    "check_units",
    "default_experts",
    "load_predictor",
    "pixel_features",
    "predictor_spec",
    "same_units",
    "save_predictor",
]
