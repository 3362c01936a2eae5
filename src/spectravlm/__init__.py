"""spectravlm: multispectral- and SAR-native foundation models for Earth observation."""

from spectravlm.errors import SpectraVLMError
from spectravlm.sensors import SENSORS, get_sensor
from spectravlm.stack import SensorSeries, SensorStack, collate_stacks

__version__ = "0.1.0"

__all__ = ["SENSORS", "SensorSeries", "SensorStack", "SpectraVLMError", "collate_stacks", "get_sensor"]
