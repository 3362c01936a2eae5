"""The Q-Former bridge: learned queries cross-attend to every encoder token and become LLM-width tokens.

After BLIP-2 (Li et al. 2023, https://arxiv.org/abs/2301.12597) and InstructBLIP (Dai et al. 2023,
https://arxiv.org/abs/2305.06500). The Q-Former is transformers' ``Blip2QFormerModel`` with the
encoder's width as its cross-attention input width; the bridge adds its own learned query tokens
and a linear projection to the LLM's hidden size. The queries cross-attend to *all* of the
encoder's tokens (every sensor group and date, the encoder's mask as ``encoder_attention_mask``), so
what the LLM receives summarises S1, S2 and time; the date of each token reaches the queries through
the encoder's own date encoding.

* **float32**: the Q-Former, its queries and the projection run in float32 whatever the LLM's dtype
  or an autocast region (as BLIP-2 keeps its Q-Former), and stay float32 when the model is cast
  (``model.to(torch.bfloat16)``); the caller casts the output to the LLM's dtype.
* **Instruction-aware queries** (``instruction_aware=True``, InstructBLIP): the prompt's text enters
  the Q-Former's self-attention beside the queries (``use_qformer_text_input``; text tokens have
  their own feed-forward layers and never cross-attend). The text is the LLM's own input embeddings
  of the prompt (numbers value-scaled), projected to the Q-Former's width with learned positions,
  so no second tokenizer is needed (InstructBLIP tokenizes the instruction again with BERT's).
* **From a BLIP-2 checkpoint** (``init_from``): ``qformer.*`` and ``query_tokens`` are loaded; the
  cross-attention key/value projections are kept freshly initialised when the encoder width differs
  from the checkpoint's vision width (1408 for the public BLIP-2 models); the text feed-forward
  layers of an instruction-aware bridge start as copies of the query ones.

Axis legend: ``s`` scenes, ``n`` encoder tokens, ``q`` queries, ``l`` instruction tokens, ``e``
encoder width, ``h`` Q-Former width, ``d`` LLM width.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from einops import repeat
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from spectravlm.errors import ModelConfigError
from spectravlm.io import AtomicDirectory, atomic_write_text
from spectravlm.vlm.blip2 import QFORMER_PREFIX, QUERY_TOKENS, read_blip2_config, read_blip2_qformer
from spectravlm.vlm.config import QFormerBridgeConfig

BRIDGE_CONFIG = "bridge_config.json"
BRIDGE_WEIGHTS = "bridge.safetensors"


@dataclass
class BridgeOutput:
    """What the bridge makes of a batch of scenes.

    Attributes:
        embeds: ``[s, q, d]`` float32 image tokens at the LLM's width (what replaces the placeholders).
        queries: ``[s, q, h]`` the Q-Former's output queries, before the projection.

    """

    embeds: Tensor
    queries: Tensor


@dataclass
class Blip2LoadReport:
    """What :meth:`QFormerBridge.load_blip2` did with each Q-Former tensor.

    Attributes:
        loaded: Parameter names taken from the checkpoint.
        reinitialised: Parameters kept freshly initialised (cross-attention key/value of another width).
        copied: Text feed-forward parameters copied from the checkpoint's query feed-forward ones.
        unused: Checkpoint tensors this bridge has no place for.
        vision_width: The checkpoint's vision width (its cross-attention input width).

    """

    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    vision_width: int = 0


def qformer_config(config: QFormerBridgeConfig) -> Blip2QFormerConfig:
    """The transformers config of the bridge's Q-Former (keyword arguments only: 4.x/5.x differ)."""
    return Blip2QFormerConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        cross_attention_frequency=config.cross_attention_frequency,
        encoder_hidden_size=config.encoder_width,
        use_qformer_text_input=config.instruction_aware,
    )


class QFormerBridge(nn.Module):
    """Q-Former queries over encoder tokens, projected to the LLM's width.

    Args:
        config: Sizes; ``encoder_width`` and ``llm_width`` must be set (``SpectraVLMConfig.derive``).
        initialise: Load ``config.init_from`` (False when the weights come from a saved bridge).

    """

    def __init__(self, config: QFormerBridgeConfig, initialise: bool = True) -> None:
        super().__init__()
        if config.encoder_width < 1 or config.llm_width < 1:
            raise ModelConfigError(
                f"QFormerBridgeConfig needs encoder_width and llm_width (got {config.encoder_width}, "
                f"{config.llm_width}); SpectraVLMConfig.derive sets them from the parts"
            )
        self.config = config
        h, q = config.hidden_size, config.num_query_tokens
        self.query_tokens = nn.Parameter(torch.zeros(1, q, h))
        nn.init.normal_(self.query_tokens, std=0.02)  # as BLIP-2 (LAVIS) initialises them
        self.qformer = Blip2QFormerModel(qformer_config(config))
        self.projection = nn.Linear(h, config.llm_width)
        self.instruction_projection: nn.Linear | None = None
        self.instruction_positions: nn.Embedding | None = None
        if config.instruction_aware:
            self.instruction_projection = nn.Linear(config.llm_width, h)
            self.instruction_positions = nn.Embedding(config.max_instruction_tokens, h)
            nn.init.normal_(self.instruction_positions.weight, std=0.02)
        self.blip2_report: Blip2LoadReport | None = None
        if initialise and config.init_from:
            self.blip2_report = self.load_blip2(config.init_from)

    # ---- float32 ----------------------------------------------------------------------------------

    def _apply(self, fn: Any, recurse: bool = True) -> QFormerBridge:
        """Move like any module, but keep floating-point tensors float32 (``model.to(bf16)``)."""

        def keep_float32(t: Tensor) -> Tensor:
            out: Tensor = fn(t)
            if t.is_floating_point() and out.dtype != t.dtype:
                return t.to(device=out.device)  # the device move without the dtype change
            return out

        return super()._apply(keep_float32, recurse)

    # ---- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        tokens: Tensor,
        mask: Tensor,
        instruction: Tensor | None = None,
        instruction_mask: Tensor | None = None,
    ) -> BridgeOutput:
        """Summarise each scene's encoder tokens into ``q`` LLM-width tokens.

        Args:
            tokens: ``[s, n, e]`` encoder tokens (``EncoderOutput.tokens``), any float dtype.
            mask: ``[s, n]`` True where a token is valid (``EncoderOutput.mask``).
            instruction: ``[s, l, d]`` the LLM's input embeddings of each scene's prompt
                (instruction-aware bridges only; ignored otherwise).
            instruction_mask: ``[s, l]`` True at the prompt's text tokens (not padding or images).

        Returns:
            :class:`BridgeOutput` with float32 ``embeds [s, q, d]``.

        """
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.encoder_width:
            raise ModelConfigError(
                f"the bridge takes encoder tokens [scenes, tokens, {self.config.encoder_width}]; got "
                f"{tuple(tokens.shape)}"
            )
        if tuple(mask.shape) != tuple(tokens.shape[:2]):
            raise ModelConfigError(
                f"mask {tuple(mask.shape)} does not match tokens {tuple(tokens.shape[:2])}"
            )
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            enc = tokens.float()
            queries = repeat(self.query_tokens, "1 q h -> s q h", s=enc.shape[0])
            if self.instruction_projection is None or instruction is None:
                out = self.qformer(
                    query_embeds=queries, encoder_hidden_states=enc, encoder_attention_mask=mask.bool()
                )
            else:
                if instruction_mask is None:
                    raise ModelConfigError("instruction needs instruction_mask (True at its text tokens)")
                out = self._with_instruction(queries, enc, mask.bool(), instruction, instruction_mask.bool())
            q = out.last_hidden_state[:, : self.config.num_query_tokens]
            return BridgeOutput(embeds=self.projection(q), queries=q)

    def _with_instruction(
        self, queries: Tensor, enc: Tensor, mask: Tensor, instruction: Tensor, instruction_mask: Tensor
    ) -> Any:
        """Queries and the last ``max_instruction_tokens`` prompt tokens through the Q-Former together."""
        from transformers.masking_utils import create_bidirectional_mask

        assert self.instruction_projection is not None and self.instruction_positions is not None
        limit = self.config.max_instruction_tokens
        rank = instruction_mask.long().cumsum(1) - 1  # index among each prompt's text tokens
        first = (instruction_mask.sum(1, keepdim=True) - limit).clamp(min=0)
        keep = instruction_mask & (rank >= first)
        start = int(keep.float().argmax(1).min()) if bool(keep.any()) else instruction.shape[1]
        keep, rank, first = keep[:, start:], rank[:, start:], first
        positions = (rank - first).clamp(min=0, max=limit - 1)
        text = self.instruction_projection(instruction[:, start:].float()) + self.instruction_positions(
            positions
        )
        q = queries.shape[1]
        # The Q-Former builds its cross-attention mask at the length of everything it is given; only
        # the queries cross-attend, so the mask is made here at the queries' length (InstructBLIP's way).
        cross = create_bidirectional_mask(
            config=self.qformer.config, inputs_embeds=queries, attention_mask=mask, encoder_hidden_states=enc
        )
        attention = torch.cat([torch.ones_like(keep[:, :1]).expand(-1, q), keep], dim=1)
        return self.qformer(
            query_embeds=torch.cat([queries, text], dim=1),
            query_length=q,
            attention_mask=attention.long(),
            encoder_hidden_states=enc,
            encoder_attention_mask=cross,
        )

    # ---- BLIP-2 initialisation ---------------------------------------------------------------------

    def load_blip2(self, name_or_path: str) -> Blip2LoadReport:
        """Initialise the Q-Former and the queries from a BLIP-2 checkpoint (see the module docstring).

        Raises:
            ModelConfigError: Not a BLIP-2 checkpoint, no Q-Former keys, or Q-Former sizes that differ.

        """
        doc = read_blip2_config(name_or_path)
        state = read_blip2_qformer(name_or_path)
        vision_width = int((doc.get("vision_config") or {}).get("hidden_size", 1408))
        queries = state.pop(QUERY_TOKENS)
        if tuple(queries.shape) != tuple(self.query_tokens.shape):
            raise ModelConfigError(
                f"BLIP-2 checkpoint {name_or_path!r} has query tokens {tuple(queries.shape)}; this bridge "
                f"has {tuple(self.query_tokens.shape)}: build its config with "
                "QFormerBridgeConfig.from_blip2(path)"
            )
        own = self.qformer.state_dict()
        report = Blip2LoadReport(loaded=[QUERY_TOKENS], vision_width=vision_width)
        new = dict(own)
        for key, value in state.items():
            name = key[len(QFORMER_PREFIX) :]
            if name not in own:
                report.unused.append(key)
                continue
            if value.shape != own[name].shape:
                if ".crossattention.attention." in name and name.rsplit(".", 2)[-2] in ("key", "value"):
                    report.reinitialised.append(name)  # another encoder width: keep the fresh init
                    continue
                raise ModelConfigError(
                    f"BLIP-2 checkpoint {name_or_path!r}: {key} is {tuple(value.shape)}, this bridge's is "
                    f"{tuple(own[name].shape)}; build its config with QFormerBridgeConfig.from_blip2(path)"
                )
            new[name] = value
            report.loaded.append(name)
        for name in own:
            if name in state or f"{QFORMER_PREFIX}{name}" in state:
                continue
            source = name.replace(".intermediate.", ".intermediate_query.").replace(
                ".output.", ".output_query."
            )
            if source != name and f"{QFORMER_PREFIX}{source}" in state:
                new[name] = state[f"{QFORMER_PREFIX}{source}"]
                report.copied.append(name)
            elif name not in report.reinitialised:
                raise ModelConfigError(
                    f"BLIP-2 checkpoint {name_or_path!r} lacks {QFORMER_PREFIX}{name}; its Q-Former does not "
                    "fit this bridge's"
                )
        self.qformer.load_state_dict(new)
        with torch.no_grad():
            self.query_tokens.copy_(queries)
        return report

    # ---- the bridge alone --------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``bridge_config.json`` and ``bridge.safetensors`` into folder ``path`` (atomically)."""
        with AtomicDirectory(path, overwrite=overwrite, what="bridge folder") as tmp:
            self.write(tmp)
        return Path(path)

    def write(self, folder: Path) -> None:
        """Write the config and weights into an existing folder (used inside a larger save)."""
        atomic_write_text(json.dumps(asdict(self.config), indent=2) + "\n", folder / BRIDGE_CONFIG)
        save_model(self, str(folder / BRIDGE_WEIGHTS))

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> QFormerBridge:
        """Load a bridge written by :meth:`save_pretrained` (weights strictly).

        Args:
            path: The folder.
            **overrides: Config fields to change that do not change shapes (dropout).

        """
        path = Path(path)
        file = path / BRIDGE_CONFIG
        if not file.is_file():
            raise ModelConfigError(f"{path} is not a bridge folder: {BRIDGE_CONFIG} is missing")
        config = QFormerBridgeConfig(**json.loads(file.read_text()))
        bridge = cls(replace(config, **overrides), initialise=False)
        missing, unexpected = load_model(bridge, str(path / BRIDGE_WEIGHTS), strict=False)
        if missing or unexpected:
            raise ModelConfigError(
                f"bridge weights in {path} do not fit its config: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        return bridge
