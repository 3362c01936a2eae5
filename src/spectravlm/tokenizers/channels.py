"""Channels: what a tokenizer knows about each input channel, taken from the sensor catalogue.

A *channel* is one plane of a tokenizer's input: a catalogue band (``B04``, ``VV``) or a channel
derived from bands (the SAR cross-pol ratio ``VV/VH``). Each channel carries a *spectral key* that
names it independently of the product level and of its position in the input, and its physical
spectral position: a centre wavelength for optical channels, a polarisation for SAR channels (never a
made-up wavelength).

Spectral keys are ``"<platform>:<name>"``, e.g. ``"Sentinel-2:B04"`` (shared by L1C and L2A, which
measure the same band) and ``"Sentinel-1:VV/VH"``.

Spectral groups (sets of channels that form one token) are derived from the catalogue here as well:

* :func:`cube_groups` - runs of ``g`` channels adjacent in wavelength (SpectralGPT's 3D cubes);
* :func:`band_groups` - channels grouped by native resolution and region of the spectrum (SatMAE's
  band groups: 10 m VNIR, 20 m red edge/NIR, 20 m SWIR, 60 m atmospheric), and SAR channels by
  transmit polarisation.

Group membership depends only on the catalogue, never on which bands an input happens to carry or
in which order, so a group index means the same thing for every band subset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spectravlm.errors import ModelConfigError, UnknownBandError
from spectravlm.sensors import SENSORS, Band, BandKind, get_sensor

# SAR channels in canonical order: co-pol, cross-pol, their ratio, per transmit polarisation.
SAR_ORDER: tuple[str, ...] = ("VV", "VH", "VV/VH", "HH", "HV", "HH/HV")
SAR_RATIOS: dict[str, tuple[str, str]] = {"VV/VH": ("VV", "VH"), "HH/HV": ("HH", "HV")}
"""Ratio channels and the (numerator, denominator) polarisations they are made of."""

# SatMAE groups S2 by native resolution and spectral region; this boundary separates VNIR from SWIR.
SWIR_START_NM = 1000.0
# Bands at this GSD or coarser (S2's 60 m B01/B09/B10) are atmospheric bands and form one group.
ATMOSPHERIC_GSD_M = 60.0


@dataclass(frozen=True)
class Channel:
    """One input channel of a tokenizer.

    Attributes:
        key: spectral key ``"<platform>:<name>"``; equal keys are the same physical measurement.
        name: band or derived-channel name (``B04``, ``VV``, ``VV/VH``).
        platform: mission, e.g. ``Sentinel-2``.
        kind: ``optical`` or ``sar``.
        gsd_m: native ground sampling distance in metres.
        wavelength_nm: centre wavelength (optical only).
        polarisation: polarisation or polarisation ratio (SAR only), e.g. ``VV`` or ``VV/VH``.

    """

    key: str
    name: str
    platform: str
    kind: BandKind
    gsd_m: float
    wavelength_nm: float | None = None
    polarisation: str | None = None

    @property
    def sort_key(self) -> tuple[float, int]:
        """Order of channels within a platform: wavelength (optical) or :data:`SAR_ORDER` (SAR)."""
        if self.kind == "optical":
            assert self.wavelength_nm is not None
            return (self.wavelength_nm, 0)
        return (0.0, SAR_ORDER.index(self.name))


def band_channel(band: Band, platform: str) -> Channel:
    """Return the :class:`Channel` of a catalogue band."""
    return Channel(
        key=f"{platform}:{band.name}",
        name=band.name,
        platform=platform,
        kind=band.kind,
        gsd_m=band.gsd_m,
        wavelength_nm=band.wavelength_nm,
        polarisation=band.polarisation,
    )


def ratio_channel(platform: str, ratio: str, gsd_m: float) -> Channel:
    """Return a SAR polarisation-ratio channel (``VV/VH`` or ``HH/HV``), in dB a difference of the two."""
    if ratio not in SAR_RATIOS:
        raise ModelConfigError(f"unknown SAR ratio channel {ratio!r}; known: {', '.join(SAR_RATIOS)}")
    return Channel(
        key=f"{platform}:{ratio}",
        name=ratio,
        platform=platform,
        kind="sar",
        gsd_m=gsd_m,
        polarisation=ratio,
    )


def sensor_channels(sensor: str, bands: Sequence[str] | None = None) -> tuple[Channel, ...]:
    """Channels of ``bands`` of ``sensor`` (all bands when ``None``), in the order given.

    Raises:
        UnknownSensorError: the catalogue has no such sensor.
        UnknownBandError: a band the sensor does not have (the message lists the known bands).

    """
    s = get_sensor(sensor)
    names = s.band_names if bands is None else s.canonical_names(bands)
    return tuple(band_channel(s.band(n), s.platform) for n in names)


def channel_universe(sensors: Iterable[str]) -> tuple[Channel, ...]:
    """Every channel of the given sensors' platforms (bands plus SAR ratios), deduplicated by key.

    All catalogue products of a platform are included (naming ``sentinel2_l2a`` also brings B10 of
    ``sentinel2_l1c``), so that the spectral groups of a platform do not depend on which of its
    product levels a model was built for. Sorted by platform, then wavelength / :data:`SAR_ORDER`,
    so the result does not depend on the order in which sensors are named.
    """
    out: dict[str, Channel] = {}
    platforms = {get_sensor(name).platform for name in sensors}
    for s in SENSORS.values():
        if s.platform not in platforms:
            continue
        for ch in sensor_channels(s.name):
            out.setdefault(ch.key, ch)
        if s.kind == "sar":
            pols = set(s.band_names)
            for ratio, (num, den) in SAR_RATIOS.items():
                if num in pols and den in pols:
                    gsd = s.band(num).gsd_m
                    out.setdefault(f"{s.platform}:{ratio}", ratio_channel(s.platform, ratio, gsd))
    return tuple(sorted(out.values(), key=lambda c: (c.platform, c.sort_key)))


def lookup_channels(universe: Sequence[Channel], keys: Iterable[str]) -> tuple[Channel, ...]:
    """Return the channels of ``universe`` called ``keys`` (an unknown key is an error)."""
    index = {c.key: c for c in universe}
    out = []
    for k in keys:
        if k not in index:
            raise UnknownBandError(f"channel {k!r} is not known to this model; it knows: {', '.join(index)}")
        out.append(index[k])
    return tuple(out)


def cube_groups(universe: Sequence[Channel], group_size: int) -> tuple[tuple[str, ...], ...]:
    """Return runs of ``group_size`` channels adjacent in wavelength (or SAR order), per platform.

    Example: Sentinel-2 (13 bands) with ``group_size=3`` gives (B01,B02,B03), (B04,B05,B06),
    (B07,B08,B8A), (B09,B10,B11), (B12,).
    """
    if group_size < 1:
        raise ModelConfigError(f"cube group size must be >= 1, got {group_size}")
    groups: list[tuple[str, ...]] = []
    for platform, kind in _platform_kinds(universe):
        members = [c.key for c in universe if c.platform == platform and c.kind == kind]
        groups += [tuple(members[i : i + group_size]) for i in range(0, len(members), group_size)]
    return tuple(groups)


def band_groups(universe: Sequence[Channel]) -> tuple[tuple[str, ...], ...]:
    """SatMAE-style groups: optical by (native GSD, VNIR/SWIR); SAR by transmit polarisation.

    For Sentinel-2 (groups ordered by their first wavelength): (B01,B09,B10) 60 m;
    (B02,B03,B04,B08) 10 m; (B05,B06,B07,B8A) 20 m VNIR; (B11,B12) 20 m SWIR.
    SatMAE (https://arxiv.org/abs/2207.08051) uses the last three and drops the
    60 m bands; here they form a fourth group so that no band is silently ignored.
    For Sentinel-1: (VV,VH,VV/VH) and (HH,HV,HH/HV).
    """
    groups: dict[tuple[str, str, float | str, bool], list[str]] = {}
    for c in universe:
        if c.kind == "optical":
            assert c.wavelength_nm is not None
            swir = c.wavelength_nm >= SWIR_START_NM and c.gsd_m < ATMOSPHERIC_GSD_M
            gkey: tuple[str, str, float | str, bool] = (c.platform, c.kind, c.gsd_m, swir)
        else:
            assert c.polarisation is not None
            gkey = (c.platform, c.kind, c.polarisation[0], False)
        groups.setdefault(gkey, []).append(c.key)
    return tuple(tuple(g) for g in groups.values())


def _platform_kinds(universe: Sequence[Channel]) -> list[tuple[str, BandKind]]:
    seen: list[tuple[str, BandKind]] = []
    for c in universe:
        if (c.platform, c.kind) not in seen:
            seen.append((c.platform, c.kind))
    return seen
