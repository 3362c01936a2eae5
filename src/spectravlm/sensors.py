"""The sensor catalogue: bands as data.

Every fact about a band that the rest of the library uses (centre wavelength, bandwidth, native ground
sampling distance, SAR polarisation, units, default normalisation statistics) lives here and nowhere
else. Optical bands carry a wavelength; SAR bands carry a frequency and a polarisation and never a
wavelength-as-if-optical (the C-band wavelength of ~5.55 cm is a property of the radar, not a spectral
position comparable to 665 nm).

Sources:
    * Sentinel-2 centre wavelengths and bandwidths: ESA, Sentinel-2 MSI spectral response functions,
      S2A values (COPE-GSEG-EOPG-TN-15-0007, v3.0). Native GSD from the MSI user guide.
    * Sentinel-1: C-band SAR at 5.405 GHz (ESA Sentinel-1 user guide); GRD products in IW mode are
      delivered at 10 m pixel spacing.
    * Default S2 L2A statistics (given as published in reflectance x 1e4, stored here divided by 1e4
      as reflectance): BigEarthNet v1.0 band statistics published by the BigEarthNet team (TU Berlin
      RSiM, bigearthnet-models-tf, ``BAND_STATS``). B10 is absent from L2A products.
    * Default S2 L1C statistics: the same BigEarthNet values for the 12 bands L1C shares with L2A
      (an approximation: L1C is top-of-atmosphere, values are higher in the blue); B10 (cirrus) from
      the eo-learn Ljubljana L1C reference scenes, rounded (see ``DEFAULT_STATS_SOURCE``).
    * Default S1 statistics (backscatter in dB): BigEarthNet-S1 v1.0 statistics
      (bigearthnet_common, ``BAND_STATS_S1``). HH/HV use the VV/VH values (no published global
      statistics for Sentinel-1 HH/HV over land in the same source).

Units (physical units are facts): every value that reaches a model is in one of :data:`UNITS`, after the
store's ``scale_factor`` and ``add_offset`` are applied (``physical = raw * scale + offset``):

    ``reflectance``  optical surface or top-of-atmosphere reflectance, 0..1 (S2 L1C/L2A digital numbers
                     x 1e-4, with offset -0.1 for L2A processing baseline >= 04.00)
    ``dB``           SAR backscatter (sigma0) in decibels
    ``linear``       SAR backscatter (sigma0) as linear power
    ``DN``           uncalibrated digital numbers (S1 GRD without its calibration): stored, never encoded

:func:`canonical_unit` maps the spellings found in stores and files to these names; a spelling it does not
know is an error, never a guess. :data:`ACCEPTED_UNITS` says which units an encoder takes per band kind.

Example:
    >>> from spectravlm.sensors import get_sensor
    >>> s2 = get_sensor("sentinel2_l2a")
    >>> s2.band("B8A").wavelength_nm
    864.7
    >>> s2.canonical_names(["b2", "B08A", "b04"])
    ('B02', 'B8A', 'B04')

"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from spectravlm.errors import UnknownBandError, UnknownSensorError, UnknownUnitError

BandKind = Literal["optical", "sar"]
SarUnit = Literal["linear", "db"]

UNITS: tuple[str, ...] = ("reflectance", "dB", "linear", "DN")
"""The physical units of the library (see the module docstring)."""

ACCEPTED_UNITS: dict[str, tuple[str, ...]] = {"optical": ("reflectance",), "sar": ("dB", "linear")}
"""Units an encoder accepts for each band kind (optical values are normalised as reflectance, SAR in dB)."""

_UNIT_SPELLINGS = {
    "reflectance": "reflectance",
    "surface reflectance": "reflectance",
    "toa reflectance": "reflectance",
    "db": "dB",
    "decibel": "dB",
    "decibels": "dB",
    "linear": "linear",
    "linear power": "linear",
    "power": "linear",
    "dn": "DN",
}


def canonical_unit(text: str) -> str:
    """The canonical name (one of :data:`UNITS`) of a unit spelling found in a store or a file.

    ``"linear power"`` is ``linear``, ``"db"`` is ``dB``, and any spelling that starts with ``DN`` (``"DN^2
    (uncalibrated linear intensity)"``) is ``DN``.

    Raises:
        UnknownUnitError: an empty or unknown spelling (the message lists the known units).

    """
    key = " ".join(str(text).strip().lower().split())
    if key in _UNIT_SPELLINGS:
        return _UNIT_SPELLINGS[key]
    if key.startswith("dn"):
        return "DN"
    raise UnknownUnitError(
        f"unit {text!r} is not known; known units: {', '.join(UNITS)} (physical = raw * scale_factor + "
        "add_offset); set the group's units when ingesting"
    )


@dataclass(frozen=True)
class BandStats:
    """Default normalisation statistics for one band, in the band's physical units (``Band.units``)."""

    mean: float
    std: float
    source: str


@dataclass(frozen=True)
class Band:
    """One band of a sensor.

    Attributes:
        name: canonical name (``B02``, ``B8A``, ``VV``).
        sensor: name of the sensor the band belongs to.
        kind: ``optical`` or ``sar``.
        gsd_m: native ground sampling distance in metres.
        units: the physical unit of the band's default statistics (``reflectance`` or ``dB``).
        wavelength_nm: centre wavelength in nm (optical only; ``None`` for SAR).
        bandwidth_nm: full width of the spectral response in nm (optical only).
        frequency_ghz: radar centre frequency in GHz (SAR only).
        polarisation: transmit/receive polarisation, e.g. ``VV`` (SAR only).
        description: a human-readable role (``red``, ``NIR narrow``, ``co-pol``).
        stats: default normalisation statistics with their source.

    """

    name: str
    sensor: str
    kind: BandKind
    gsd_m: float
    units: str
    wavelength_nm: float | None = None
    bandwidth_nm: float | None = None
    frequency_ghz: float | None = None
    polarisation: str | None = None
    description: str = ""
    stats: BandStats | None = None

    def __post_init__(self) -> None:
        if self.kind == "optical" and (self.wavelength_nm is None or self.polarisation is not None):
            raise ValueError(f"optical band {self.name!r} needs a wavelength and no polarisation")
        if self.kind == "sar" and (self.wavelength_nm is not None or self.polarisation is None):
            raise ValueError(f"SAR band {self.name!r} needs a polarisation and no wavelength")


@dataclass(frozen=True)
class Sensor:
    """A sensor (or a product level of one) and its bands, in the product's canonical order.

    Attributes:
        name: catalogue key, e.g. ``sentinel2_l2a``.
        platform: mission name, e.g. ``Sentinel-2``.
        kind: ``optical`` or ``sar``.
        bands: the bands in canonical product order.
        aliases: extra spellings (upper-cased) mapped to canonical band names.
        description: one line on the product.

    """

    name: str
    platform: str
    kind: BandKind
    bands: tuple[Band, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def band_names(self) -> tuple[str, ...]:
        """Canonical band names in product order."""
        return tuple(b.name for b in self.bands)

    def canonical_name(self, name: str) -> str:
        """Return the canonical spelling of ``name`` (``B2``, ``b02`` and ``B02`` are all ``B02``).

        Raises:
            UnknownBandError: if the sensor has no such band; the message lists the known bands.

        """
        key = name.strip().upper()
        if key in self._index:
            return key
        if self.aliases.get(key) in self._index:
            return self.aliases[key]
        raise UnknownBandError(
            f"band {name!r} is not in {self.name}; known bands: {', '.join(self.band_names)}"
        )

    def canonical_names(self, names: Iterable[str]) -> tuple[str, ...]:
        """Canonical spellings of several band names; duplicates are an error."""
        out = tuple(self.canonical_name(n) for n in names)
        if len(set(out)) != len(out):
            raise UnknownBandError(f"band list {list(names)} names a band of {self.name} twice")
        return out

    def band(self, name: str) -> Band:
        """The :class:`Band` called ``name`` (any known spelling)."""
        return self.bands[self._index[self.canonical_name(name)]]

    def select(self, names: Sequence[str]) -> tuple[Band, ...]:
        """The bands called ``names``, in the order given."""
        return tuple(self.band(n) for n in names)

    def index(self, name: str) -> int:
        """Position of band ``name`` in the product order."""
        return self._index[self.canonical_name(name)]

    @property
    def _index(self) -> dict[str, int]:
        return {b.name: i for i, b in enumerate(self.bands)}


# --------------------------------------------------------------------------------------------------
# Sentinel-2
# --------------------------------------------------------------------------------------------------

_BEN = "BigEarthNet v1.0 S2 L2A band statistics (TU Berlin RSiM, bigearthnet-models-tf BAND_STATS)"
_BEN_S1 = "BigEarthNet-S1 v1.0 statistics (bigearthnet_common BAND_STATS_S1), dB"
_EOLEARN_B10 = "eo-learn Ljubljana S2 L1C reference scenes (5 dates, 2015), rounded"

# name, centre wavelength (nm), bandwidth (nm), GSD (m), role, (mean, std) in reflectance x 1e4
_S2_TABLE: tuple[tuple[str, float, float, float, str, tuple[float, float] | None], ...] = (
    ("B01", 442.7, 21.0, 60.0, "coastal aerosol", (340.76769064, 554.81258967)),
    ("B02", 492.4, 66.0, 10.0, "blue", (429.9430203, 572.41639287)),
    ("B03", 559.8, 36.0, 10.0, "green", (614.21682446, 582.87945694)),
    ("B04", 664.6, 31.0, 10.0, "red", (590.23569706, 675.88746967)),
    ("B05", 704.1, 15.0, 20.0, "red edge 1", (950.68368468, 729.89827633)),
    ("B06", 740.5, 15.0, 20.0, "red edge 2", (1792.46290469, 1096.01480586)),
    ("B07", 782.8, 20.0, 20.0, "red edge 3", (2075.46795189, 1273.45393088)),
    ("B08", 832.8, 106.0, 10.0, "NIR", (2218.94553375, 1365.45589904)),
    ("B8A", 864.7, 21.0, 20.0, "NIR narrow", (2266.46036911, 1356.13789355)),
    ("B09", 945.1, 20.0, 60.0, "water vapour", (2246.0605464, 1302.3292881)),
    ("B10", 1373.5, 31.0, 60.0, "SWIR cirrus", None),
    ("B11", 1613.7, 91.0, 20.0, "SWIR 1", (1594.42694882, 1079.19066363)),
    ("B12", 2202.4, 175.0, 20.0, "SWIR 2", (1009.32729131, 818.86747235)),
)
# B10 is only in L1C; its statistics come from the real eo-learn L1C scenes (see module docstring).
_S2_B10_STATS = BandStats(mean=21.0e-4, std=17.0e-4, source=_EOLEARN_B10)
_S2_DN_PER_REFLECTANCE = 1e4  # the published statistics are in S2 digital numbers (reflectance x 1e4)

_S2_ALIASES = {f"B{i}": f"B{i:02d}" for i in range(1, 13)} | {
    "B08A": "B8A",
    "BLUE": "B02",
    "GREEN": "B03",
    "RED": "B04",
    "NIR": "B08",
}


def _s2_bands(sensor: str, with_b10: bool) -> tuple[Band, ...]:
    bands = []
    for name, wl, bw, gsd, role, stats in _S2_TABLE:
        if name == "B10" and not with_b10:
            continue
        band_stats = (
            _S2_B10_STATS
            if stats is None
            else BandStats(stats[0] / _S2_DN_PER_REFLECTANCE, stats[1] / _S2_DN_PER_REFLECTANCE, _BEN)
        )
        bands.append(
            Band(
                name=name,
                sensor=sensor,
                kind="optical",
                gsd_m=gsd,
                units="reflectance",
                wavelength_nm=wl,
                bandwidth_nm=bw,
                description=role,
                stats=band_stats,
            )
        )
    return tuple(bands)


SENTINEL2_L1C = Sensor(
    name="sentinel2_l1c",
    platform="Sentinel-2",
    kind="optical",
    bands=_s2_bands("sentinel2_l1c", with_b10=True),
    aliases=_S2_ALIASES,
    description="Sentinel-2 MSI Level-1C top-of-atmosphere reflectance, 13 bands",
)

SENTINEL2_L2A = Sensor(
    name="sentinel2_l2a",
    platform="Sentinel-2",
    kind="optical",
    bands=_s2_bands("sentinel2_l2a", with_b10=False),
    aliases=_S2_ALIASES,
    description="Sentinel-2 MSI Level-2A bottom-of-atmosphere reflectance, 12 bands (no B10)",
)

# --------------------------------------------------------------------------------------------------
# Sentinel-1
# --------------------------------------------------------------------------------------------------

SENTINEL1_FREQUENCY_GHZ = 5.405
_S1_STATS = {"VV": (-12.619993741972035, 5.115911777546365), "VH": (-19.29044597721542, 5.464428464912864)}
_S1_ROLES = {"VV": "co-pol", "VH": "cross-pol", "HH": "co-pol", "HV": "cross-pol"}


def _s1_bands(sensor: str) -> tuple[Band, ...]:
    bands = []
    for pol in ("VV", "VH", "HH", "HV"):
        like = {"HH": "VV", "HV": "VH"}.get(pol, pol)
        mean, std = _S1_STATS[like]
        source = _BEN_S1 if like == pol else f"{_BEN_S1}; {pol} uses the {like} values"
        bands.append(
            Band(
                name=pol,
                sensor=sensor,
                kind="sar",
                gsd_m=10.0,
                units="dB",
                frequency_ghz=SENTINEL1_FREQUENCY_GHZ,
                polarisation=pol,
                description=_S1_ROLES[pol],
                stats=BandStats(mean, std, source),
            )
        )
    return tuple(bands)


SENTINEL1_GRD = Sensor(
    name="sentinel1_grd",
    platform="Sentinel-1",
    kind="sar",
    bands=_s1_bands("sentinel1_grd"),
    aliases={"VV_DB": "VV", "VH_DB": "VH", "HH_DB": "HH", "HV_DB": "HV"},
    description="Sentinel-1 C-band SAR GRD backscatter (sigma0), VV/VH (IW dual-pol) or HH/HV",
)

SENSORS: dict[str, Sensor] = {s.name: s for s in (SENTINEL2_L1C, SENTINEL2_L2A, SENTINEL1_GRD)}
_SENSOR_ALIASES = {
    "s2": "sentinel2_l2a",
    "s2_l2a": "sentinel2_l2a",
    "s2_l1c": "sentinel2_l1c",
    "sentinel2": "sentinel2_l2a",
    "s1": "sentinel1_grd",
    "s1_grd": "sentinel1_grd",
    "sentinel1": "sentinel1_grd",
}


def get_sensor(name: str | Sensor) -> Sensor:
    """Look a sensor up by catalogue name or a common short name (``s2``, ``s1``).

    Raises:
        UnknownSensorError: naming the known sensors.

    """
    if isinstance(name, Sensor):
        return name
    squash = re.sub(r"[\s\-_]+", "", name.strip().lower())
    lookup = {re.sub("_", "", k): v for k, v in (_SENSOR_ALIASES | {n: n for n in SENSORS}).items()}
    key = lookup.get(squash, "")
    if key not in SENSORS:
        raise UnknownSensorError(
            f"sensor {name!r} is not in the catalogue; known sensors: {', '.join(SENSORS)} "
            f"(short names: {', '.join(_SENSOR_ALIASES)})"
        )
    return SENSORS[key]
