"""Ingest from rasterio-readable sources and arrays into cube stores."""

from spectravlm.data.ingest.arrays import ingest_arrays
from spectravlm.data.ingest.biomassters import ingest_biomassters

__all__ = ["ingest_arrays", "ingest_biomassters"]
