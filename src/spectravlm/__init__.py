"""spectravlm: multispectral- and SAR-native foundation models for Earth observation.

Importing spectravlm before torch sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a
policy: OpenMP threads that spin while they wait made a CPU fit 2.6-2.8x slower whenever the cores were
shared (``benchmarks/RESULTS.md``, ``## threads``). It must be set before the OpenMP runtime loads (with
torch), so it has no effect in a process that imported torch first.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from spectravlm.errors import SpectraVLMError
from spectravlm.sensors import SENSORS, get_sensor
from spectravlm.stack import SensorSeries, SensorStack, collate_stacks

__version__ = "0.1.0"

__all__ = ["SENSORS", "SensorSeries", "SensorStack", "SpectraVLMError", "collate_stacks", "get_sensor"]
