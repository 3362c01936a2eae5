"""Ingest from rasterio-readable sources and arrays into cube stores."""

from spectravlm.data.ingest.arrays import ingest_arrays
from spectravlm.data.ingest.biomassters import ingest_biomassters
from spectravlm.data.ingest.geotiff import ingest_geotiff, scan_geotiffs
from spectravlm.data.ingest.s1_grd import GrdScene, find_grd_scene, ingest_s1_grd

__all__ = [
    "GrdScene",
    "find_grd_scene",
    "ingest_arrays",
    "ingest_biomassters",
    "ingest_geotiff",
    "ingest_s1_grd",
    "scan_geotiffs",
]
