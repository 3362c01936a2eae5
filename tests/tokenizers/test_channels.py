from __future__ import annotations

import pytest

from spectravlm.errors import UnknownBandError
from spectravlm.tokenizers.channels import (
    band_groups,
    channel_universe,
    cube_groups,
    lookup_channels,
    sensor_channels,
)


def _names(groups: tuple[tuple[str, ...], ...]) -> list[tuple[str, ...]]:
    return [tuple(k.split(":")[1] for k in g) for g in groups]


def test_universe_covers_platform_and_is_order_free() -> None:
    a = channel_universe(["sentinel2_l2a", "sentinel1_grd"])
    b = channel_universe(["s1", "sentinel2_l1c"])
    assert a == b
    keys = [c.key for c in a]
    assert "Sentinel-2:B10" in keys  # from L1C, although only L2A was named
    assert "Sentinel-1:VV/VH" in keys and "Sentinel-1:HH/HV" in keys
    assert all(c.wavelength_nm is None for c in a if c.kind == "sar")


def test_cube_groups_follow_wavelength_not_input_order() -> None:
    groups = _names(cube_groups(channel_universe(["s2"]), 3))
    assert groups[:3] == [("B01", "B02", "B03"), ("B04", "B05", "B06"), ("B07", "B08", "B8A")]
    assert groups[-1] == ("B12",)


def test_band_groups_are_satmae_groups() -> None:
    groups = set(_names(band_groups(channel_universe(["s2", "s1"]))))
    assert ("B02", "B03", "B04", "B08") in groups
    assert ("B05", "B06", "B07", "B8A") in groups
    assert ("B11", "B12") in groups
    assert ("B01", "B09", "B10") in groups
    assert ("VV", "VH", "VV/VH") in groups


def test_unknown_band_is_an_error_naming_known_ones() -> None:
    with pytest.raises(UnknownBandError, match="known bands"):
        sensor_channels("sentinel2_l2a", ["B10"])  # B10 is not an L2A band
    with pytest.raises(UnknownBandError, match="knows"):
        lookup_channels(channel_universe(["s1"]), ["Sentinel-2:B04"])
