"""ingest_stac over STAC items built with pystac around the real BigEarthNet S2 band files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr

from spectravlm.cli import main
from spectravlm.data.ingest import ingest_stac
from spectravlm.data.stats import normalisation_stats
from spectravlm.data.store import CubeStore
from spectravlm.errors import IngestError

L2A = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge071",
          "B06": "rededge075", "B07": "rededge078", "B08": "nir", "B8A": "nir08", "B09": "nir09",
          "B11": "swir16", "B12": "swir22"}  # fmt: skip


def _band_file(d: Path, band: str) -> Path:
    return next(d.glob(f"*_{band}.tif"))


def make_item(
    patch: Path,
    item_id: str,
    when: datetime,
    tile: str = "33UUP",
    offset: float = -0.1,
    scl: Path | None = None,
) -> pystac.Item:
    """A Sentinel-2 L2A item as public catalogues publish them: one COG asset per band (keyed by common
    name), eo:bands, raster:bands with scale, offset (baseline >= 04.00) and nodata, plus a visual asset."""
    with rasterio.open(_band_file(patch, "B02")) as src:
        epsg = src.crs.to_epsg()
    item = pystac.Item(
        id=item_id,
        geometry=None,
        bbox=None,
        datetime=when,
        properties={"s2:mgrs_tile": tile, "proj:code": f"EPSG:{epsg}", "platform": "sentinel-2a"},
    )
    for band in L2A:
        item.add_asset(
            COMMON[band],
            pystac.Asset(
                href=str(_band_file(patch, band)),
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields={
                    "eo:bands": [{"name": band, "common_name": COMMON[band]}],
                    "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": offset}],
                },
            ),
        )
    item.add_asset(  # a 3-band visual asset holding B04/B03/B02 too: never preferred over the band assets
        "visual",
        pystac.Asset(
            href=str(_band_file(patch, "B04")),
            media_type=pystac.MediaType.COG,
            roles=["visual"],
            extra_fields={"eo:bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]},
        ),
    )
    if scl is not None:
        item.add_asset("scl", pystac.Asset(href=str(scl), media_type=pystac.MediaType.COG, roles=["data"]))
    return item


def _write(item: pystac.Item, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{item.id}.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


def test_stac_items_give_dates_offset_nodata(ben: list[dict], tmp_path: Path) -> None:
    patch = ben[0]["s2"]
    t1, t2 = datetime(2022, 6, 13, 10, 10, 31, tzinfo=UTC), datetime(2022, 6, 18, 10, 10, 29, tzinfo=UTC)
    items = [make_item(patch, "S2A_T33UUP_20220618", t2), make_item(patch, "S2A_T33UUP_20220613", t1)]
    files = [_write(i, tmp_path / "items") for i in items]
    store = tmp_path / "stac.zarr"
    ingest_stac(files, store, "s2", "sentinel2_l2a", progress=False)
    g = CubeStore.open(store)["s2"]
    # the time series is in time order, with the items' datetimes
    assert [str(t) for t in g.times] == ["2022-06-13T10:10:31", "2022-06-18T10:10:29"]
    assert g.bands == L2A and g.units == "reflectance"
    # scale, offset and nodata come from raster:bands, and say so
    assert (g.scale_factor, g.add_offset, g.nodata) == (1e-4, -0.1, 0.0)
    assert "STAC raster:bands offset" in g.attrs["offset_source"]
    assert "STAC raster:bands nodata" in g.attrs["nodata_source"]
    data = g.read((1,))
    for i, band in enumerate(L2A):
        with rasterio.open(_band_file(patch, band)) as src:
            raw = src.read(1)
            f = round(src.transform.a / 10)
        np.testing.assert_array_equal(data[i], np.repeat(np.repeat(raw, f, 0), f, 1), err_msg=band)
    # xarray applies the offset: physical reflectance = DN * 1e-4 - 0.1
    ds = xr.open_zarr(store, group="s2")
    b02 = data[1].astype(np.float64)
    np.testing.assert_allclose(
        ds["data"].values[1, 1], np.where(b02 == 0, np.nan, b02 * 1e-4 - 0.1), rtol=1e-6
    )
    # statistics were accumulated during the ingest, and the encoder's view is in reflectance
    n, mean, _ = normalisation_stats(g)["B02"]
    valid = (data != 0).all(0)
    assert n == 2 * valid.sum() and mean == pytest.approx(b02[valid].mean() * 1e-4 - 0.1)
    assert "ingest" in g.attrs["stats_source"]


def test_stac_sources_and_refusals(ben: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    patch = ben[0]["s2"]
    when = datetime(2022, 6, 13, 10, 10, 31, tzinfo=UTC)
    # an ItemCollection file, and a directory of items through the CLI
    coll = pystac.ItemCollection([make_item(patch, "a", when)])
    (tmp_path / "coll.json").write_text(json.dumps(coll.to_dict()))
    ingest_stac(tmp_path / "coll.json", tmp_path / "c.zarr", "s2", "s2", bands=["B04", "B08"], progress=False)
    assert CubeStore.open(tmp_path / "c.zarr")["s2"].bands == ("B04", "B08")
    _write(make_item(patch, "b", when), tmp_path / "dir")
    assert (
        main(["data", "ingest", "stac", str(tmp_path / "dir"), str(tmp_path / "d.zarr"), "--sensor", "s2"])
        == 0
    )
    assert "physical = raw * 0.0001 + -0.1 in reflectance" in capsys.readouterr().out
    # items of two tiles are not mixed silently; --tile picks one
    two = [_write(make_item(patch, "x", when, tile="33UUP"), tmp_path / "two"),
           _write(make_item(patch, "y", when.replace(day=14), tile="32TQM"), tmp_path / "two")]  # fmt: skip
    with pytest.raises(IngestError, match=r"2 tiles \(32TQM, 33UUP\).*--tile"):
        ingest_stac(two, tmp_path / "t.zarr", "s2", "s2", progress=False)
    ingest_stac(two, tmp_path / "t.zarr", "s2", "s2", tile="T33UUP", progress=False)
    assert len(CubeStore.open(tmp_path / "t.zarr")["s2"].times) == 1
    # different offsets across bands of a group cannot be one group attribute
    odd = make_item(patch, "odd", when)
    odd.assets["blue"].extra_fields["raster:bands"][0]["offset"] = 0.0
    with pytest.raises(IngestError, match="offset differ"):
        ingest_stac(_write(odd, tmp_path / "odd"), tmp_path / "o.zarr", "s2", "s2", progress=False)
    # a STAC API that cannot be reached: one line naming it
    with pytest.raises(IngestError, match=r"http://127\.0\.0\.1:9/stac: STAC API search failed"):
        ingest_stac("http://127.0.0.1:9/stac", tmp_path / "u.zarr", "s2", "s2",
                    search={"collections": ["sentinel-2-l2a"], "max_items": 1}, progress=False)  # fmt: skip
    with pytest.raises(IngestError, match="pass units="):
        ingest_stac(tmp_path / "dir", tmp_path / "s1.zarr", "s1", "s1", progress=False)
    assert not any((tmp_path / n).exists() for n in ("o.zarr", "u.zarr", "s1.zarr"))


def test_stac_scl_asset_is_the_validity_layer(ben: list[dict], tmp_path: Path) -> None:
    patch = ben[0]["s2"]
    with rasterio.open(_band_file(patch, "B05")) as src:  # the 20 m grid of the patch
        profile = src.profile | {"dtype": "uint8", "nodata": None}
    scl = np.random.default_rng(0).integers(0, 12, (60, 60), dtype=np.uint8)
    with rasterio.open(tmp_path / "SCL.tif", "w", **profile) as dst:
        dst.write(scl, 1)
    item = make_item(patch, "i", datetime(2022, 6, 13, tzinfo=UTC), scl=tmp_path / "SCL.tif")
    ingest_stac(_write(item, tmp_path / "items"), tmp_path / "s.zarr", "s2", "sentinel2_l2a", progress=False)
    g = CubeStore.open(tmp_path / "s.zarr")["s2"]
    up = np.repeat(np.repeat(scl, 2, 0), 2, 1)
    np.testing.assert_array_equal(g.read_layer("scl", (0,)), up)
    np.testing.assert_array_equal(g.read_mask((0,)), np.isin(up, (0, 1, 3, 8, 9, 10)).astype(np.uint8))
