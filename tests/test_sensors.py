import pytest

from spectravlm.errors import UnknownBandError, UnknownSensorError
from spectravlm.sensors import SENTINEL1_GRD, SENTINEL2_L1C, SENTINEL2_L2A, get_sensor


def test_s2_band_counts_and_order():
    assert len(SENTINEL2_L1C.bands) == 13
    assert len(SENTINEL2_L2A.bands) == 12
    assert "B10" in SENTINEL2_L1C.band_names and "B10" not in SENTINEL2_L2A.band_names
    wl = [b.wavelength_nm for b in SENTINEL2_L1C.bands]
    assert wl == sorted(wl), "canonical order is by wavelength"
    assert SENTINEL2_L2A.band("B8A").wavelength_nm == pytest.approx(864.7)
    assert SENTINEL2_L2A.band("B02").gsd_m == 10 and SENTINEL2_L2A.band("B05").gsd_m == 20


@pytest.mark.parametrize(
    ("alias", "name"), [("B2", "B02"), ("b02", "B02"), ("B08A", "B8A"), ("b8a", "B8A"), ("red", "B04")]
)
def test_aliases(alias, name):
    assert SENTINEL2_L2A.canonical_name(alias) == name


def test_sar_bands_have_no_wavelength():
    for band in SENTINEL1_GRD.bands:
        assert band.kind == "sar"
        assert band.wavelength_nm is None
        assert band.frequency_ghz == pytest.approx(5.405)
        assert band.polarisation == band.name
    assert SENTINEL1_GRD.band_names == ("VV", "VH", "HH", "HV")


def test_every_band_has_sourced_stats():
    for sensor in (SENTINEL2_L1C, SENTINEL2_L2A, SENTINEL1_GRD):
        for band in sensor.bands:
            assert band.stats is not None and band.stats.std > 0 and band.stats.source


def test_unknown_band_lists_known():
    with pytest.raises(UnknownBandError, match="known bands: B01, B02"):
        SENTINEL2_L2A.band("B10")


def test_duplicate_band_is_error():
    with pytest.raises(UnknownBandError, match="twice"):
        SENTINEL2_L2A.canonical_names(["B2", "B02"])


def test_get_sensor():
    assert get_sensor("s2") is SENTINEL2_L2A
    assert get_sensor("Sentinel-1 GRD") is SENTINEL1_GRD
    with pytest.raises(UnknownSensorError, match="known sensors"):
        get_sensor("landsat8")
