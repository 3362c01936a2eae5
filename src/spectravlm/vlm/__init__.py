"""The VLM: a Q-Former bridge from the sensor-native encoder into any Hugging Face causal LLM.

See docs/vlm.md for the architecture, the prompt format, LoRA, saving and generation.
"""

from spectravlm.vlm.bridge import Blip2LoadReport, BridgeOutput, QFormerBridge
from spectravlm.vlm.config import (
    LLMConfig,
    LoraSettings,
    NumericConfig,
    QFormerBridgeConfig,
    SpectraVLMConfig,
)
from spectravlm.vlm.generation import NumericTextIteratorStreamer, NumericTextStreamer, VLMGeneration
from spectravlm.vlm.lora import default_lora_targets
from spectravlm.vlm.model import SceneEmbeddings, SpectraVLM, SpectraVLMOutput
from spectravlm.vlm.processor import SpectraVLMProcessor, VLMInputs

__all__ = [
    "Blip2LoadReport",
    "BridgeOutput",
    "LLMConfig",
    "LoraSettings",
    "NumericConfig",
    "NumericTextIteratorStreamer",
    "NumericTextStreamer",
    "QFormerBridge",
    "QFormerBridgeConfig",
    "SceneEmbeddings",
    "SpectraVLM",
    "SpectraVLMConfig",
    "SpectraVLMOutput",
    "SpectraVLMProcessor",
    "VLMGeneration",
    "VLMInputs",
    "default_lora_targets",
]
