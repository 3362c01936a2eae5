"""Cube stores: layout, ingest, statistics and the synthetic demo store."""

from spectravlm.data.store import CubeStore, Grid, SensorCube, SensorGroup, StoreTransaction

__all__ = ["CubeStore", "Grid", "SensorCube", "SensorGroup", "StoreTransaction"]
