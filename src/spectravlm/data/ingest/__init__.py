"""Ingest from rasterio-readable sources, STAC items and arrays into cube stores."""

from spectravlm.data.ingest.arrays import ingest_arrays
from spectravlm.data.ingest.biomassters import ingest_biomassters
from spectravlm.data.ingest.geotiff import ScanResult, ingest_geotiff, scan_geotiffs
from spectravlm.data.ingest.s1_grd import GrdScene, find_grd_scene, ingest_s1_grd
from spectravlm.data.ingest.scenes import LayerSpec, Validity
from spectravlm.data.ingest.stac import ingest_stac

__all__ = [
    "GrdScene",
    "LayerSpec",
    "ScanResult",
    "Validity",
    "find_grd_scene",
    "ingest_arrays",
    "ingest_biomassters",
    "ingest_geotiff",
    "ingest_s1_grd",
    "ingest_stac",
    "scan_geotiffs",
]
