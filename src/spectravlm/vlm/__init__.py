"""The VLM: a Q-Former bridge from the sensor-native encoder into any Hugging Face causal LLM.

See docs/vlm.md for the architecture, the prompt format, LoRA, saving, generation, and the number gate that
states numbers from regression heads and scene statistics (experts).
"""

from spectravlm.vlm.bridge import Blip2LoadReport, BridgeOutput, QFormerBridge
from spectravlm.vlm.config import (
    GateConfig,
    LLMConfig,
    LoraSettings,
    NumericConfig,
    QFormerBridgeConfig,
    SpectraVLMConfig,
)
from spectravlm.vlm.experts import (
    ExpertConfig,
    ExpertValues,
    HeadExpert,
    LinearDenseRegressor,
    RegionExpert,
    StatisticExpert,
    canonical_units,
    default_experts,
    same_units,
)
from spectravlm.vlm.gate import GatedNumbers, NumberGate
from spectravlm.vlm.generation import (
    NumberSource,
    NumericTextIteratorStreamer,
    NumericTextStreamer,
    VLMGeneration,
)
from spectravlm.vlm.lora import default_lora_targets
from spectravlm.vlm.model import SceneEmbeddings, SpectraVLM, SpectraVLMOutput
from spectravlm.vlm.processor import SpectraVLMProcessor, VLMInputs

__all__ = [
    "Blip2LoadReport",
    "BridgeOutput",
    "ExpertConfig",
    "ExpertValues",
    "GateConfig",
    "GatedNumbers",
    "HeadExpert",
    "LLMConfig",
    "LinearDenseRegressor",
    "LoraSettings",
    "NumberGate",
    "NumberSource",
    "NumericConfig",
    "NumericTextIteratorStreamer",
    "NumericTextStreamer",
    "QFormerBridge",
    "QFormerBridgeConfig",
    "RegionExpert",
    "SceneEmbeddings",
    "SpectraVLM",
    "SpectraVLMConfig",
    "SpectraVLMOutput",
    "SpectraVLMProcessor",
    "StatisticExpert",
    "VLMGeneration",
    "VLMInputs",
    "canonical_units",
    "default_experts",
    "default_lora_targets",
    "same_units",
]
