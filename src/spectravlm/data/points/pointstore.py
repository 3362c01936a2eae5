"""The points store: pixel time series at samples, one Zarr v3 store, readable by ``xarray.open_zarr``.

Layout (format version 1; ``docs/points.md`` has the full description)::

    samples.zarr/                  root attrs: spectravlm_points {format_version, groups, target, static,
                                   dynamic, neighbourhood, n_samples}, title, source, Conventions
      sample_id   (sample,)                str     sample identifiers
      x, y        (sample,)                float64 location in the CRS of spatial_ref (pixel column/row + 0.5
                                                   for a store without a CRS)
      spatial_ref ()                       int64   CF grid mapping: crs_wkt (empty when none)
      <target>    (sample,)                float32 the target (e.g. agb, units t/ha), NaN where none
      <target>_se (sample,)                float32 its standard error (optional)
      static/<name>  (sample,)             float32 static covariates with units (elevation, slope)
      dynamic/time   (sample, dstep)       int64   dates of the per-date covariates, seconds since 1970
      dynamic/<name> (sample, dstep)       float32 per-date covariates with units (temperature)
      <group>/                             attrs: sensor, bands, units, scale_factor, add_offset, orbit,
                                           nodata
        data   (sample, step, band, row, col)  stored dtype  values (physical = data * scale + offset)
        valid  (sample, step, row, col)        bool   observed (not padding, nodata, cloud, masked)
        time   (sample, step)                  int64  acquisition time, seconds since 1970 (NaT: padding)
        band   (band,)                         str    canonical band names

Each sensor group has its own ``step`` axis (its dates per sample, padded); ``row``/``col`` span the
``k x k`` neighbourhood (1 x 1 for single pixels). Arrays are chunked along ``sample`` only (1024 samples a
chunk), Blosc zstd-1 with shuffle. The store is built aside and swapped in
(:class:`spectravlm.io.AtomicDirectory`):
an existing store is replaced only with ``overwrite``, never half-written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from spectravlm.data.points.series import Covariate, PixelSeries, SeriesGroup
from spectravlm.errors import StoreError, StoreVersionError
from spectravlm.io import AtomicDirectory

FORMAT_VERSION = 1
SAMPLE_CHUNK = 1024
TIME_UNITS = "seconds since 1970-01-01T00:00:00"
NAT = np.iinfo(np.int64).min
"""Stored time of a padded step (xarray decodes it to NaT through ``_FillValue``)."""
ROOT_KEY = "spectravlm_points"
_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
_RESERVED = {"sample_id", "x", "y", "spatial_ref", "static", "dynamic"}


def _array(
    g: zarr.Group, name: str, values: np.ndarray, dims: tuple[str, ...], attrs: dict[str, Any], fill: Any
) -> None:
    chunks: Any = (min(SAMPLE_CHUNK, max(1, values.shape[0])), *values.shape[1:]) if values.ndim else "auto"
    a = g.create_array(
        name,
        shape=values.shape,
        chunks=chunks,
        dtype=values.dtype,
        fill_value=fill,
        compressors=_COMPRESSOR if values.ndim else None,
        dimension_names=dims,
        attributes=attrs,
    )
    a[...] = values


def _times(t: np.ndarray) -> np.ndarray:
    out = t.astype("datetime64[s]").astype(np.int64)
    out[np.isnat(t)] = NAT
    return out


def _time_attrs() -> dict[str, Any]:
    return {
        "units": TIME_UNITS,
        "calendar": "proleptic_gregorian",
        "standard_name": "time",
        "_FillValue": int(NAT),
    }


def write_points_store(
    path: str | os.PathLike[str], series: PixelSeries, overwrite: bool = False, title: str = ""
) -> Path:
    """Write ``series`` as a points store at ``path`` (see the module docstring).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is off (nothing is written).
        StoreError: a group, target or covariate name that clashes with the layout's names.

    """
    names = [*series.groups, series.target_name, *series.static, *series.dynamic]
    clash = sorted(set(names) & _RESERVED)
    if clash:
        raise StoreError(
            f"{path}: names {clash} are reserved in a points store ({', '.join(sorted(_RESERVED))})"
        )
    with AtomicDirectory(path, overwrite=overwrite, what="points store") as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "groups": list(series.groups),
            "target": series.target_name if series.target is not None else None,
            "target_se": series.target_se is not None,
            "static": list(series.static),
            "dynamic": list(series.dynamic),
            "neighbourhood": series.neighbourhood,
            "n_samples": series.n_samples,
        }
        root.attrs.update({ROOT_KEY: meta, "title": title, "source": series.source, "Conventions": "CF-1.8"})
        ids = np.asarray(series.ids).astype(str)
        a = root.create_array("sample_id", shape=ids.shape, dtype=str, dimension_names=("sample",))
        a[:] = ids
        standard = "projection_{}_coordinate" if series.crs_wkt else "{}_pixel"
        for name, values in (("x", series.x), ("y", series.y)):
            _array(root, name, values, ("sample",), {"standard_name": standard.format(name)}, np.nan)
        _array(
            root,
            "spatial_ref",
            np.zeros((), np.int64),
            (),
            {"crs_wkt": series.crs_wkt or "", "spatial_ref": series.crs_wkt or ""},
            0,
        )
        if series.target is not None:
            attrs = {"units": series.target_units, "long_name": series.target_name, "coordinates": "x y"}
            _array(root, series.target_name, series.target, ("sample",), attrs, np.nan)
            if series.target_se is not None:
                se_attrs = {
                    "units": series.target_units,
                    "long_name": f"standard error of {series.target_name}",
                }
                _array(root, f"{series.target_name}_se", series.target_se, ("sample",), se_attrs, np.nan)
        if series.static:
            sg = root.create_group("static")
            for name, cov in series.static.items():
                _array(
                    sg,
                    name,
                    cov.values,
                    ("sample",),
                    {"units": cov.units, "long_name": cov.long_name or name},
                    np.nan,
                )
        if series.dynamic:
            assert series.dynamic_times is not None
            dg = root.create_group("dynamic")
            _array(dg, "time", _times(series.dynamic_times), ("sample", "dstep"), _time_attrs(), NAT)
            for name, cov in series.dynamic.items():
                attrs = {"units": cov.units, "long_name": cov.long_name or name}
                _array(dg, name, cov.values, ("sample", "dstep"), attrs, np.nan)
        for g, s in series.groups.items():
            assert s.valid is not None
            group = root.create_group(
                g,
                attributes={
                    "sensor": s.sensor,
                    "bands": list(s.bands),
                    "units": s.units,
                    "scale_factor": s.scale,
                    "add_offset": s.offset,
                    "orbit": s.orbit,
                    "nodata": s.nodata,
                },
            )
            fill: Any = s.nodata if s.nodata is not None else (np.nan if s.values.dtype.kind == "f" else 0)
            data_attrs: dict[str, Any] = {"units": s.units, "long_name": f"{s.sensor} values"}
            if (s.scale, s.offset) != (1.0, 0.0):
                data_attrs |= {"scale_factor": s.scale, "add_offset": s.offset}
            _array(group, "data", s.values, ("sample", "step", "band", "row", "col"), data_attrs, fill)
            _array(
                group, "valid", s.valid, ("sample", "step", "row", "col"), {"long_name": "observed"}, False
            )
            _array(group, "time", _times(s.times), ("sample", "step"), _time_attrs(), NAT)
            band = group.create_array("band", shape=(len(s.bands),), dtype=str, dimension_names=("band",))
            band[:] = np.array(s.bands)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(str(tmp), zarr_format=3)
    return Path(path)


def _read(group: zarr.Group, name: str, where: str) -> np.ndarray:
    if name not in group:
        raise StoreError(f"{where}: array {name!r} is missing (not a complete points store)")
    array = group[name]
    assert isinstance(array, zarr.Array)
    return np.asarray(array[...])


def _from_times(values: np.ndarray) -> np.ndarray:
    out = values.astype("datetime64[s]")
    out[values == NAT] = np.datetime64("NaT")
    return out


def read_points_store(path: str | os.PathLike[str]) -> PixelSeries:
    """Read a whole points store into memory.

    Raises:
        StoreError: not a points store, or an incomplete one (naming the array).
        StoreVersionError: a newer format version than this library knows.

    """
    where = os.fspath(path)
    if not Path(where).is_dir():
        raise StoreError(f"{where} is not a points store: no such directory")
    try:
        root = zarr.open_group(where, mode="r", use_consolidated=True)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise StoreError(f"{where} is not a points store: {err}") from err
    meta = dict(root.attrs).get(ROOT_KEY)
    if not isinstance(meta, dict):
        raise StoreError(
            f"{where} is a Zarr store but not a spectravlm points store (no {ROOT_KEY} attrs); "
            "write one with spectravlm data sample or spectravlm data points series"
        )
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise StoreVersionError(
            f"{where} has points-store format version {meta['format_version']}; this spectravlm reads up to "
            f"{FORMAT_VERSION}: upgrade spectravlm"
        )
    groups = {}
    for g in meta["groups"]:
        zg = root[g]
        assert isinstance(zg, zarr.Group)
        attrs: dict[str, Any] = dict(zg.attrs)
        groups[g] = SeriesGroup(
            sensor=str(attrs["sensor"]),
            bands=[str(b) for b in attrs["bands"]],
            values=_read(zg, "data", f"{where}/{g}"),
            times=_from_times(_read(zg, "time", f"{where}/{g}")),
            valid=_read(zg, "valid", f"{where}/{g}"),
            units=str(attrs["units"]),
            scale=float(attrs.get("scale_factor", 1.0)),
            offset=float(attrs.get("add_offset", 0.0)),
            orbit=attrs.get("orbit"),
            nodata=attrs.get("nodata"),
        )
    crs = str(dict(root["spatial_ref"].attrs).get("crs_wkt", "")) or None
    target_name = meta.get("target")
    target = target_se = None
    units = ""
    if target_name:
        target = _read(root, target_name, where)
        units = str(dict(root[target_name].attrs).get("units", ""))
        if meta.get("target_se"):
            target_se = _read(root, f"{target_name}_se", where)

    def covariates(sub: str, names: list[str]) -> dict[str, Covariate]:
        if not names:
            return {}
        zg = root[sub]
        assert isinstance(zg, zarr.Group)
        out = {}
        for name in names:
            attrs = dict(zg[name].attrs)
            out[name] = Covariate(
                _read(zg, name, f"{where}/{sub}"),
                str(attrs.get("units", "")),
                str(attrs.get("long_name", name)),
            )
        return out

    dynamic = covariates("dynamic", list(meta.get("dynamic", [])))
    dynamic_times = None
    if dynamic:
        zg = root["dynamic"]
        assert isinstance(zg, zarr.Group)
        dynamic_times = _from_times(_read(zg, "time", f"{where}/dynamic"))
    return PixelSeries(
        groups=groups,
        x=_read(root, "x", where),
        y=_read(root, "y", where),
        crs_wkt=crs,
        ids=np.array([str(v) for v in _read(root, "sample_id", where).tolist()]),
        target=target,
        target_name=target_name or "target",
        target_units=units,
        target_se=target_se,
        static=covariates("static", list(meta.get("static", []))),
        dynamic=dynamic,
        dynamic_times=dynamic_times,
        source=str(dict(root.attrs).get("source", "")),
    )


__all__ = ["FORMAT_VERSION", "read_points_store", "write_points_store"]
