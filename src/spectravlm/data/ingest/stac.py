"""Ingest STAC items: Sentinel scenes described by their metadata (pystac; pystac-client for STAC APIs).

Sources (``spectravlm data ingest stac SOURCE ... STORE``):

* an Item JSON, an ItemCollection (``FeatureCollection``) JSON, a Collection or Catalog JSON (its items,
  recursively), or a directory (every Item JSON below it), read with :mod:`pystac`;
* an ``http(s)://`` URL of a STAC API with search arguments (``collections``, ``bbox``, ``datetime``,
  ``query``) through :mod:`pystac_client`; without search arguments a URL is read as a STAC document.
  An unreachable URL is one error naming it.

What each item gives:

* the acquisition time: ``datetime`` (``start_datetime`` when ``datetime`` is null);
* the band assets, found by band name: the asset's ``eo:bands`` / ``bands`` ``name`` or
  ``common_name`` (``blue``, ``nir08``, ...), else the asset key (``B02``, ``red``); single-band assets
  are preferred over multi-band ones (``visual``), GeoTIFF/COG over JPEG 2000 copies of the same band.
  Thumbnails, overviews and metadata assets are ignored;
* scale, offset and nodata from ``raster:bands`` (``scale``, ``offset``, ``nodata``; STAC 1.1
  ``bands`` with ``raster:scale`` / ``raster:offset`` / ``nodata``): so Sentinel-2 L2A processing
  baseline >= 04.00's -0.1 reflectance offset (-1000 DN) arrives from the metadata. Bands of one group
  must agree (one scale/offset per group);
* the validity layer: an ``SCL`` asset (scene classification) or a cloud-probability asset (``CLD``,
  ``cloud_probability``, ``MSK_CLDPRB``), as in :mod:`spectravlm.data.ingest.scenes`;
* the CRS (``proj:code`` / ``proj:epsg``) is checked against each file's own; the pixels, transform and
  CRS are read from the files themselves with rasterio.

Several items of one tile make one time series. Items of different tiles (``s2:mgrs_tile``,
``mgrs:*``, ``grid:code``) are not mixed into one store silently: pick one with ``tile`` (one store per
tile), or give a ``grid`` / append to a store and the items are put on its grid by the GeoTIFF ingest's
rules (same CRS and covering the grid, or ``allow_reproject``).

Reading: the assets are read by our windowed reader (:func:`~spectravlm.data.ingest.scenes.write_scenes`),
one row of 256 px chunks of every band at a time. odc-stac was measured against it on a whole tile: the
same values, 83 s and 3.2 GB peak memory for ``odc.stac.load`` + ``to_zarr`` against 55 s and 1.0 GB
(``benchmarks/RESULTS.md``, ``## ingest``), so it is not used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from rasterio.crs import CRS

from spectravlm.data.ingest.dates import iso_time
from spectravlm.data.ingest.geotiff import (
    alignment_check,
    finest_file,
    reference_grid,
    resampling_method,
)
from spectravlm.data.ingest.product import Fact, default_nodata, s2_reflectance_scaling
from spectravlm.data.ingest.scenes import Scene, Source, Validity, open_raster, write_scenes
from spectravlm.data.store import Grid, StoreTransaction, canonical_units
from spectravlm.errors import IngestError, StoreError, UnknownBandError
from spectravlm.sensors import Sensor, get_sensor

SKIP_ROLES = {"thumbnail", "overview", "metadata", "visual"}
CLOUD_KEYS = {"cld", "cloud", "cloud_probability", "cloud-probability", "msk_cldprb", "cldprb", "clp"}
SCL_KEYS = {"scl", "scene_classification", "scene-classification"}
TILE_PROPERTIES = ("s2:mgrs_tile", "grid:code", "mgrs:grid_square", "s1:datatake_id")
# STAC common names -> Sentinel-2 band names (STAC eo extension, Sentinel-2 MSI)
COMMON_NAMES = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge": "B05",
    "rededge071": "B05",
    "rededge075": "B06",
    "rededge078": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
}


@dataclass(frozen=True)
class AssetBand:
    """Where one band of an item lives, with its ``raster:bands`` entry."""

    key: str
    href: str
    index: int
    raster: dict[str, Any]
    single: bool
    tiff: bool


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def load_items(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    search: dict[str, Any] | None = None,
) -> list[pystac.Item]:
    """Read the STAC items that ``sources`` name (module docstring)."""
    items: list[pystac.Item] = []
    seq = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    if not seq:
        raise IngestError("no STAC item, collection, directory or URL given")
    for src in seq:
        text = os.fspath(src)
        if _is_url(text) and search:
            items.extend(_search(text, search))
            continue
        if not _is_url(text):
            path = Path(text)
            if path.is_dir():
                found = [p for p in sorted(path.rglob("*.json")) if _is_item_file(p)]
                if not found:
                    raise IngestError(f"{path}: directory holds no STAC Item JSON")
                items.extend(pystac.Item.from_file(str(p)) for p in found)
                continue
            if not path.is_file():
                raise IngestError(f"{path}: no such file or directory")
        items.extend(_read_document(text))
    return items


def _is_item_file(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "Feature" and "stac_version" in doc


def _read_document(href: str) -> list[pystac.Item]:
    try:
        if _is_url(href):
            doc = pystac.StacIO.default().read_json(href)
        else:
            doc = json.loads(Path(href).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise IngestError(f"{href}: cannot be read as STAC JSON: {err}") from err
    kind = doc.get("type") if isinstance(doc, dict) else None
    try:
        if kind == "Feature":
            return [pystac.Item.from_dict(doc, href=href)]
        if kind == "FeatureCollection":
            return list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
        if kind in ("Collection", "Catalog"):
            cat = pystac.read_file(href)
            assert isinstance(cat, pystac.Catalog)
            return list(cat.get_items(recursive=True))
    except pystac.STACError as err:
        raise IngestError(f"{href}: not valid STAC: {err}") from err
    raise IngestError(f"{href}: not a STAC Item, ItemCollection, Collection or Catalog (type {kind!r})")


def _search(url: str, search: dict[str, Any]) -> list[pystac.Item]:
    try:
        from pystac_client import Client
    except ImportError as err:  # pragma: no cover - optional dependency
        raise IngestError(f"searching {url} needs pystac-client: pip install pystac-client ({err})") from err
    try:
        client = Client.open(url)
        return list(client.search(**search).items())
    except Exception as err:  # pystac-client raises requests/API errors of many kinds
        raise IngestError(f"{url}: STAC API search failed: {type(err).__name__}: {err}") from err


def item_time(item: pystac.Item) -> np.datetime64:
    """The acquisition time of ``item`` (``datetime``, else ``start_datetime``), UTC."""
    text = item.properties.get("datetime") or item.properties.get("start_datetime")
    if not text:
        raise IngestError(f"STAC item {item.id}: no datetime or start_datetime")
    return iso_time(str(text), f"STAC item {item.id}")


def _asset_band_names(key: str, asset: pystac.Asset) -> list[str]:
    """The band names an asset declares (``eo:bands`` / ``bands``: name, then common name), else its key."""
    entries = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    names = []
    for e in entries:
        names.append(str(e.get("name") or e.get("common_name") or e.get("eo:common_name") or ""))
    return names if names and all(names) else [key]


def _raster_entries(asset: pystac.Asset, n: int) -> list[dict[str, Any]]:
    raster = asset.extra_fields.get("raster:bands")
    if raster:
        return [dict(r) for r in raster]
    out = []
    for b in asset.extra_fields.get("bands") or [{}] * n:  # STAC 1.1: raster fields on "bands"
        out.append(
            {
                k: v
                for k, v in (
                    ("scale", b.get("raster:scale")),
                    ("offset", b.get("raster:offset")),
                    ("nodata", b.get("nodata", asset.extra_fields.get("nodata"))),
                )
                if v is not None
            }
        )
    return out


def _canonical(cat: Sensor, name: str) -> str | None:
    try:
        return cat.canonical_name(name)
    except UnknownBandError:
        pass
    mapped = COMMON_NAMES.get(name.lower())
    if mapped is not None and cat.kind == "optical":
        try:
            return cat.canonical_name(mapped)
        except UnknownBandError:
            return None
    return None


def item_bands(item: pystac.Item, cat: Sensor) -> tuple[dict[str, AssetBand], Source | None, Source | None]:
    """Band assets of ``item`` by canonical band name, and its SCL and cloud-probability sources."""
    candidates: dict[str, list[AssetBand]] = {}
    scl = cloud = None
    for key, asset in item.assets.items():
        roles = set(asset.roles or [])
        if roles & SKIP_ROLES and "data" not in roles:
            continue
        media = (asset.media_type or "").lower()
        if media and not any(m in media for m in ("tiff", "jp2", "jpeg2000", "octet-stream")):
            continue
        href = asset.get_absolute_href() or asset.href
        if key.lower() in SCL_KEYS or _asset_band_names(key, asset) == ["SCL"]:
            scl = Source(href)
            continue
        if key.lower() in CLOUD_KEYS:
            cloud = Source(href)
            continue
        names = _asset_band_names(key, asset)
        raster = _raster_entries(asset, len(names))
        for i, name in enumerate(names):
            band = _canonical(cat, name) or (_canonical(cat, key) if len(names) == 1 else None)
            if band is None:
                continue
            entry = raster[i] if i < len(raster) else {}
            tiff = "tiff" in media or href.lower().endswith((".tif", ".tiff"))
            candidates.setdefault(band, []).append(AssetBand(key, href, i + 1, entry, len(names) == 1, tiff))
    chosen: dict[str, AssetBand] = {}
    for band, options in candidates.items():
        options.sort(key=lambda a: (not a.single, not a.tiff, a.key))
        best = options[0]
        rivals = [o for o in options[1:] if (o.single, o.tiff) == (best.single, best.tiff)]
        if rivals:
            keys = ", ".join(o.key for o in [best, *rivals])
            raise IngestError(f"STAC item {item.id}: band {band} is in several assets ({keys}); pass bands=")
        chosen[band] = best
    return chosen, scl, cloud


def _fact(values: set[Any], what: str, items: str) -> Fact | None:
    values.discard(None)
    if not values:
        return None
    if len(values) > 1:
        raise IngestError(
            f"{items}: the bands' raster:bands {what} differ ({sorted(values)}); a group has one {what}"
        )
    return Fact(float(values.pop()), f"STAC raster:bands {what} ({items})")


def item_tile(item: pystac.Item) -> str | None:
    """The tile (MGRS square or grid code) of an item, when its properties say."""
    props = item.properties
    if "mgrs:utm_zone" in props and "mgrs:latitude_band" in props and "mgrs:grid_square" in props:
        return f"{props['mgrs:utm_zone']}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}"
    for key in TILE_PROPERTIES:
        if props.get(key):
            return str(props[key])
    return None


def _item_crs(item: pystac.Item, asset_key: str) -> CRS | None:
    asset = item.assets[asset_key]
    for holder in (asset.extra_fields, item.properties):
        if holder.get("proj:code"):
            return CRS.from_user_input(holder["proj:code"])
        if holder.get("proj:epsg"):
            return CRS.from_epsg(int(holder["proj:epsg"]))
    return None


def ingest_stac(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    group: str,
    sensor: str,
    units: str = "",
    bands: Sequence[str] | None = None,
    search: dict[str, Any] | None = None,
    tile: str | None = None,
    grid: Grid | None = None,
    resolution: float | None = None,
    resampling: str = "nearest",
    allow_reproject: bool = False,
    nodata: float | None = None,
    scale_factor: float | None = None,
    add_offset: float | None = None,
    processing_baseline: str | None = None,
    validity: Validity | None = None,
    use_scl: bool = True,
    use_cloud: bool = True,
    orbit: str | None = None,
    append: bool = False,
    overwrite: bool = False,
    title: str = "",
    stats: bool = True,
    progress: bool = True,
) -> list[str]:
    """Ingest STAC items of one sensor into sensor group ``group`` of ``store``.

    Args:
        sources: item/collection JSON files, directories, or a STAC API URL (module docstring).
        store: the store path.
        group: the sensor group to write.
        sensor: catalogue sensor name (``sentinel2_l2a``, ...).
        units: physical units after scaling; default ``reflectance`` for optical sensors (S2 digital
            numbers are reflectance once scaled). SAR items need it given.
        bands: the bands to store, in this order (default: every catalogue band the items have).
        search: STAC API search arguments (``collections``, ``bbox``, ``datetime``, ``query``, ``max_items``).
        tile: keep only items of this tile (``33UUP``).
        grid: the target grid (default: the store's, when appending; else the finest band of the first item).
        resolution: pixel size of a derived grid.
        resampling: kernel for bands not on the grid.
        allow_reproject: warp assets in another CRS.
        nodata: raw nodata (default: ``raster:bands`` nodata, else the files', else the product default).
        scale_factor: explicit scale (default: ``raster:bands``, else product rules).
        add_offset: explicit offset (default: ``raster:bands``, else product rules).
        processing_baseline: Sentinel-2 processing baseline, when nothing else says the offset.
        validity: SCL classes and cloud threshold.
        use_scl: use the items' SCL asset as the validity layer (when present).
        use_cloud: use the items' cloud-probability asset (when present).
        orbit: SAR orbit direction.
        append: add to an existing store.
        overwrite: replace an existing store.
        title: store title.
        stats: store statistics computed during the ingest.
        progress: show a progress bar.

    Returns:
        Warnings given during the ingest.

    """
    cat = get_sensor(sensor)
    if not units:
        if cat.kind != "optical":
            raise IngestError(
                f"{cat.name}: pass units= (--units dB, linear or DN): SAR units are not implied"
            )
        units = "reflectance"
    try:
        units = canonical_units(units)
    except StoreError as err:
        raise IngestError(str(err)) from None
    method = resampling_method(resampling)
    items = load_items(sources, search)
    tiles = {item.id: item_tile(item) for item in items}
    if tile is not None:
        items = [
            i for i in items if tiles[i.id] is not None and str(tiles[i.id]).lstrip("T") == tile.lstrip("T")
        ]
        if not items:
            raise IngestError(
                f"no STAC item of tile {tile}; tiles found: {sorted({str(t) for t in tiles.values()})}"
            )
    distinct = sorted({str(tiles[i.id]) for i in items if tiles[i.id] is not None})
    if len(distinct) > 1 and grid is None and not append:
        raise IngestError(
            f"the items are of {len(distinct)} tiles ({', '.join(distinct)}); ingest one tile per store "
            "(--tile) or give the grid to put them on (append to a store)"
        )
    items.sort(key=item_time)
    times = [item_time(i) for i in items]
    dup = sorted({str(t) for t in times if times.count(t) > 1})
    if dup:
        raise IngestError(f"several items share the acquisition time(s) {', '.join(dup)}; filter by --tile")
    per_item = [item_bands(i, cat) for i in items]
    present = set.intersection(*(set(b) for b, _, _ in per_item))
    if bands is None:
        out_bands = tuple(b for b in cat.band_names if b in present)
        if not out_bands:
            raise IngestError(
                f"the STAC items have no asset of a {cat.name} band; assets: {sorted(items[0].assets)}"
            )
    else:
        out_bands = cat.canonical_names(bands)
        for item, (found, _, _) in zip(items, per_item, strict=True):
            missing = [b for b in out_bands if b not in found]
            if missing:
                raise IngestError(
                    f"STAC item {item.id} has no asset for band(s) {', '.join(missing)}; "
                    f"it has {', '.join(found)}"
                )
    scenes = []
    scale_values: set[Any] = set()
    offset_values: set[Any] = set()
    nodata_values: set[Any] = set()
    for item, t, (found, scl, cloud) in zip(items, times, per_item, strict=True):
        chosen = [found[b] for b in out_bands]
        for a in chosen:
            scale_values.add(a.raster.get("scale"))
            offset_values.add(a.raster.get("offset"))
            nodata_values.add(a.raster.get("nodata"))
            item_crs = _item_crs(item, a.key)
            if item_crs is not None:
                with open_raster(a.href) as src:
                    if src.crs is not None and CRS.from_user_input(src.crs) != item_crs:
                        raise IngestError(
                            f"STAC item {item.id} asset {a.key}: proj says {item_crs}, "
                            f"the file {a.href} is in {src.crs}"
                        )
        scenes.append(
            Scene(
                time=t,
                bands=tuple(Source(a.href, a.index) for a in chosen),
                scl=scl if use_scl and cat.name == "sentinel2_l2a" else None,
                cloud=cloud if use_cloud else None,
                origin=f"STAC item {item.id}",
            )
        )
    ids = ", ".join(i.id for i in items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
    stac_scale = _fact(scale_values, "scale", ids)
    stac_offset = _fact(offset_values, "offset", ids)
    stac_nodata = _fact(nodata_values, "nodata", ids)
    with open_raster(scenes[0].bands[0].path) as src:
        dtype = src.dtypes[scenes[0].bands[0].index - 1]
    scale, offset = s2_reflectance_scaling(
        cat.name,
        dtype,
        units,
        [Path(scenes[0].bands[0].path)] if not _is_url(scenes[0].bands[0].path) else [],
        scale_factor,
        add_offset,
        processing_baseline,
        stac=(stac_scale, stac_offset),
    )
    if nodata is not None:
        nodata_fact: Fact | None = Fact(nodata, "given (--nodata)")
    else:
        with open_raster(scenes[0].bands[0].path) as src:
            declared = src.nodata
        nodata_fact = stac_nodata or (
            Fact(declared, "declared by the files")
            if declared is not None
            else default_nodata(cat.name, dtype, units)
        )
    if any(s.scl is not None for s in scenes) and not all(s.scl is not None for s in scenes):
        for s in scenes:
            s.scl = None  # some items lack SCL: no partial validity layer
    if any(s.cloud is not None for s in scenes) and not all(s.cloud is not None for s in scenes):
        for s in scenes:
            s.cloud = None
    if any(s.scl is not None for s in scenes):
        for s in scenes:
            s.cloud = None  # SCL is the validity layer; a cloud probability would be a second, redundant one
    mode = "append" if append else "create"
    with StoreTransaction(store, mode=mode, overwrite=overwrite, title=title) as tx:
        target = grid or tx.grid()
        if target is not None:
            reference = "the given grid" if grid is not None else f"the grid of {store}"
        else:
            ref_file = finest_file([s.path for s in scenes[0].bands])
            target = reference_grid(ref_file, resolution)
            reference = str(ref_file)
        return write_scenes(
            tx,
            group,
            cat.name,
            out_bands,
            scenes,
            target,
            alignment_check(reference, allow_reproject),
            units=units,
            dtype=dtype,
            scale=scale,
            offset=offset,
            nodata=nodata_fact,
            resampling=method,
            validity=validity,
            stats=stats,
            orbit=orbit,
            source=f"STAC ingest of {len(items)} items ({ids})",
            attrs={"resampling": method.name, "stac_items": [i.id for i in items][:1000]},
            progress=progress,
        )


def sidecar_items(folder: Path) -> dict[str, tuple[pystac.Item, str]]:
    """STAC items in ``folder``: ``{absolute asset path: (item, asset key)}`` for their local assets."""
    out: dict[str, tuple[pystac.Item, str]] = {}
    for p in sorted(folder.glob("*.json")):
        if not _is_item_file(p):
            continue
        item = pystac.Item.from_file(str(p))
        for key, asset in item.assets.items():
            href = asset.get_absolute_href() or asset.href
            if not _is_url(href):
                out[str(Path(href).resolve())] = (item, key)
    return out
