"""Typed configs of the VLM: the Q-Former bridge, the LLM reference, LoRA, numbers, and the composite.

:class:`SpectraVLMConfig` is the one object that describes a whole model (after BLIP-2's
``Blip2Config``): the encoder's config, the bridge's, the LLM's reference and the numeric settings,
with the sizes that follow from the parts (the encoder's width for the Q-Former's cross-attention,
the LLM's width for the projection, the vocabulary the tokenizer added) derived in this module and
nowhere else (:meth:`SpectraVLMConfig.derive`). Every config is a dataclass that round-trips through
JSON (:meth:`SpectraVLMConfig.to_dict` / :meth:`SpectraVLMConfig.from_dict`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from spectravlm.encoders.spectral import SpectralEncoderConfig
from spectravlm.errors import ModelConfigError
from spectravlm.numeric.modules import Scaling
from spectravlm.numeric.parsing import DEFAULT_MAX_DIGITS
from spectravlm.numeric.tokenizer import MODES, NumericMode

LLMDtype = Literal["float32", "bfloat16", "float16", "auto"]
BLIP2_ENCODER_WIDTH = 1408  # EVA-CLIP ViT-g/14, the vision tower of the public BLIP-2 checkpoints


def _from_dict(cls: Any, d: dict[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``d``, refusing unknown keys (a typo must not pass silently)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ModelConfigError(f"unknown {what} fields {unknown}; known: {sorted(known)}")
    return cls(**d)


@dataclass
class QFormerBridgeConfig:
    """Hyperparameters of :class:`~spectravlm.vlm.bridge.QFormerBridge`.

    The defaults are BLIP-2's Q-Former (BERT-base sized, cross-attention every second layer, 32
    queries), so that :attr:`init_from` a BLIP-2 checkpoint fits without changes.
    """

    num_query_tokens: int = 32  # learned queries = image tokens the LLM sees per scene
    hidden_size: int = 768  # Q-Former width
    num_hidden_layers: int = 12  # Q-Former depth
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # Q-Former MLP width
    cross_attention_frequency: int = 2  # a cross-attention to the encoder every n layers
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    instruction_aware: bool = False  # InstructBLIP: the prompt's text enters the Q-Former too
    max_instruction_tokens: int = 128  # text tokens the Q-Former reads (the last ones of the prompt)
    init_from: str | None = None  # BLIP-2 checkpoint (hub name or folder): qformer.* and query_tokens
    encoder_width: int = 0  # derived: the encoder's token width (cross-attention key/value input)
    llm_width: int = 0  # derived: the LLM's hidden size (projection output)

    def __post_init__(self) -> None:
        if self.num_query_tokens < 1:
            raise ModelConfigError(f"bridge.num_query_tokens must be >= 1; got {self.num_query_tokens}")
        if self.hidden_size % self.num_attention_heads:
            raise ModelConfigError(
                f"bridge.hidden_size={self.hidden_size} must be divisible by "
                f"bridge.num_attention_heads={self.num_attention_heads}"
            )
        if self.cross_attention_frequency < 1 or self.cross_attention_frequency > self.num_hidden_layers:
            raise ModelConfigError(
                f"bridge.cross_attention_frequency must be in 1..{self.num_hidden_layers} "
                f"(num_hidden_layers); got {self.cross_attention_frequency}"
            )
        if self.max_instruction_tokens < 1:
            raise ModelConfigError(
                f"bridge.max_instruction_tokens must be >= 1; got {self.max_instruction_tokens}"
            )

    @classmethod
    def from_blip2(cls, path: str | Path, **overrides: Any) -> QFormerBridgeConfig:
        """The config that fits BLIP-2 checkpoint ``path`` (its Q-Former sizes and query count).

        Args:
            path: A BLIP-2 checkpoint folder or hub name (its ``config.json`` is read).
            **overrides: Fields to set on top (``instruction_aware=True``, dropout, ...).

        """
        from spectravlm.vlm.blip2 import read_blip2_config

        doc = read_blip2_config(str(path))
        q = doc.get("qformer_config") or {}
        sizes = {
            k: q[k]
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "cross_attention_frequency",
                "layer_norm_eps",
            )
            if k in q
        }
        if "num_query_tokens" in doc:
            sizes["num_query_tokens"] = doc["num_query_tokens"]
        return cls(**(sizes | {"init_from": str(path)} | overrides))


@dataclass
class LoraSettings:
    """LoRA on the LLM (through peft); ``None`` target modules = the family's default.

    The family defaults are peft's table (``q_proj``/``v_proj`` for Llama, Qwen2, Mistral, Gemma;
    ``c_attn`` for GPT-2): :func:`spectravlm.vlm.lora.default_lora_targets`.
    """

    r: int = 16  # rank
    alpha: int = 32  # scaling numerator (update scaled by alpha / r)
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # module names (suffix match); None: family default

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ModelConfigError(f"llm.lora.r must be >= 1; got {self.r}")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                raise ModelConfigError(
                    f"llm.lora.target_modules must be a list of module names; got the string "
                    f"{self.target_modules!r}"
                )
            self.target_modules = tuple(self.target_modules)
            if not self.target_modules:
                raise ModelConfigError("llm.lora.target_modules is empty; give module names or None")


@dataclass
class LLMConfig:
    """Which causal LM, how it is loaded, and what of it trains.

    The LLM is a reference: ``name_or_path`` is loaded with ``AutoModelForCausalLM.from_pretrained``,
    the path users take with hub names. A saved model keeps this reference (plus LoRA adapters), and
    the LLM's weights only when they were trained (``freeze=False``).
    """

    name_or_path: str  # hub name or folder of the causal LM
    tokenizer: str | None = None  # hub name or folder of its tokenizer (default: name_or_path)
    revision: str | None = None  # hub revision (branch, tag or commit)
    dtype: LLMDtype = "float32"  # weights dtype when loading
    attn_implementation: str | None = None  # "sdpa", "eager", ... (None: transformers' default)
    freeze: bool = True  # keep the LLM's own weights fixed
    lora: LoraSettings | None = None  # LoRA adapters on the LLM only
    hidden_size: int = 0  # derived: the LLM's width
    model_type: str = ""  # derived: the LLM's family (config.model_type)
    fingerprint: str = ""  # derived: hash of the input embeddings, checked when a saved model loads

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = _from_dict(LoraSettings, self.lora, "llm.lora")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ModelConfigError(
                f"llm.dtype must be 'float32', 'bfloat16', 'float16' or 'auto'; got {self.dtype!r}"
            )
        if self.lora is not None and not self.freeze:
            raise ModelConfigError(
                "llm.freeze=False trains every LLM weight, and llm.lora trains adapters on a frozen LLM: "
                "set one of them"
            )


@dataclass
class NumericConfig:
    """How numbers are tokenized and read (see docs/numeric.md)."""

    mode: NumericMode = "xval"  # "xval" (numbers as values), "digits" or "none"
    combine: Literal["multiply", "add"] = "multiply"  # how a value enters its token's embedding
    scaling: Scaling = "symlog"  # value scaling of the number embedding and head
    scale: float = 1.0  # unit of that scaling
    number_loss_weight: float = 1.0  # weight of the number head's loss beside the LM loss
    max_digits: int = DEFAULT_MAX_DIGITS  # longest digit string the tokenizer accepts

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ModelConfigError(f"numeric.mode must be one of {MODES}; got {self.mode!r}")


@dataclass
class SpectraVLMConfig:
    """Everything that defines a :class:`~spectravlm.vlm.model.SpectraVLM`.

    Attributes:
        encoder: The sensor-native encoder's config (read from ``encoder_path`` when that is given).
        llm: The causal LM reference and what of it trains.
        bridge: The Q-Former bridge.
        numeric: Number tokenization and the number modules.
        encoder_path: A ``SpectralEncoder.save_pretrained`` folder to start the encoder from.
        freeze_encoder: Keep the encoder fixed (and in eval mode), as BLIP-2 keeps its vision tower.
        gradient_checkpointing: Recompute activations in backward, in encoder, Q-Former and LLM.
        image_token: The placeholder a prompt writes where a scene goes.
        base_vocab_size: Derived: the tokenizer's vocabulary before spectravlm added tokens.
        added_tokens: Derived: the tokens spectravlm added (number tokens, then ``image_token``), in
            id order from ``base_vocab_size``; their embeddings are the model's own.

    """

    encoder: SpectralEncoderConfig
    llm: LLMConfig
    bridge: QFormerBridgeConfig = field(default_factory=QFormerBridgeConfig)
    numeric: NumericConfig = field(default_factory=NumericConfig)
    encoder_path: str | None = None
    freeze_encoder: bool = True
    gradient_checkpointing: bool = False
    image_token: str = "<image>"
    base_vocab_size: int = 0
    added_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = SpectralEncoderConfig.from_dict(self.encoder)
        if isinstance(self.llm, dict):
            self.llm = _from_dict(LLMConfig, self.llm, "llm")
        if isinstance(self.bridge, dict):
            self.bridge = _from_dict(QFormerBridgeConfig, self.bridge, "bridge")
        if isinstance(self.numeric, dict):
            self.numeric = _from_dict(NumericConfig, self.numeric, "numeric")
        self.added_tokens = tuple(self.added_tokens)
        if not self.image_token or self.image_token.strip() != self.image_token:
            raise ModelConfigError(
                f"image_token must be a non-empty string without surrounding spaces; got {self.image_token!r}"
            )
        self.bridge.encoder_width = self.encoder.dim

    @classmethod
    def create(
        cls,
        encoder: str | Path | SpectralEncoderConfig,
        llm: str | LLMConfig,
        bridge: QFormerBridgeConfig | None = None,
        numeric: NumericConfig | None = None,
        freeze_encoder: bool = True,
        gradient_checkpointing: bool = False,
    ) -> SpectraVLMConfig:
        """A config from an encoder (folder or config) and an LLM (hub name, folder or config).

        Args:
            encoder: A ``SpectralEncoder.save_pretrained`` folder (its config is read and its weights
                are loaded when the model is built) or a :class:`SpectralEncoderConfig` (fresh weights).
            llm: A hub name or folder of a causal LM, or a full :class:`LLMConfig`.
            bridge: Q-Former settings (default: BLIP-2 sized).
            numeric: Number settings (default: ``xval``).
            freeze_encoder: Keep the encoder fixed.
            gradient_checkpointing: Recompute activations in backward.

        """
        from spectravlm.encoders.spectral import SpectralEncoder

        path = None
        if isinstance(encoder, SpectralEncoderConfig):
            enc_config = encoder
        else:
            path = str(encoder)
            enc_config = SpectralEncoder.load_config(path)
        return cls(
            encoder=enc_config,
            llm=llm if isinstance(llm, LLMConfig) else LLMConfig(name_or_path=str(llm)),
            bridge=bridge or QFormerBridgeConfig(),
            numeric=numeric or NumericConfig(),
            encoder_path=path,
            freeze_encoder=freeze_encoder,
            gradient_checkpointing=gradient_checkpointing,
        )

    def derive(self, llm_config: Any, base_vocab_size: int, added_tokens: tuple[str, ...]) -> None:
        """Set every size that follows from the parts (the one place where they are set).

        Args:
            llm_config: The LLM's Hugging Face config (``hidden_size``, ``model_type``).
            base_vocab_size: The tokenizer's vocabulary before spectravlm's tokens.
            added_tokens: spectravlm's tokens in id order from ``base_vocab_size``.

        Raises:
            ModelConfigError: A saved config whose sizes disagree with the parts it is loaded with.

        """
        hidden = int(llm_config.hidden_size)
        model_type = str(getattr(llm_config, "model_type", ""))
        for name, old, new in (
            ("llm.hidden_size", self.llm.hidden_size, hidden),
            ("base_vocab_size", self.base_vocab_size, base_vocab_size),
        ):
            if old and old != new:
                raise ModelConfigError(
                    f"{name} is {old} in this config but the parts give {new}: the LLM or tokenizer is not "
                    "the one this model was made with"
                )
        if self.added_tokens and self.added_tokens != tuple(added_tokens):
            raise ModelConfigError(
                f"the tokenizer's added tokens {list(added_tokens)} differ from this config's "
                f"{list(self.added_tokens)}"
            )
        self.llm.hidden_size = hidden
        self.llm.model_type = model_type
        self.bridge.encoder_width = self.encoder.dim
        self.bridge.llm_width = hidden
        self.base_vocab_size = base_vocab_size
        self.added_tokens = tuple(added_tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpectraVLMConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        d = dict(d)
        llm = dict(d.get("llm") or {})
        lora = llm.get("lora")
        if isinstance(lora, dict) and lora.get("target_modules") is not None:
            lora = dict(lora) | {"target_modules": tuple(lora["target_modules"])}
            llm["lora"] = lora
        if "llm" in d:
            d["llm"] = llm
        return _from_dict(cls, d, "SpectraVLMConfig")

    def to_json(self) -> str:
        """The config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"
