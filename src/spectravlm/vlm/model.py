"""SpectraVLM: the sensor-native encoder, the Q-Former bridge and any Hugging Face causal LLM.

::

    SensorStack(s) ──▶ SpectralEncoder.forward_features ──▶ tokens [s,n,e] + mask (all sensors, dates)
                                                               │
                                                 QFormerBridge (float32): q queries cross-attend
                                                               │ [s,q,d]
    prompt "... <image> ... 152.3 ..." ──▶ processor ──▶ ids  ──▶ embeddings [b,l,d]
        (numbers as values, placeholders x q)             LLM rows | own rows for added tokens
                                                          number tokens scaled by their value
                                                          placeholders ◀── masked_scatter
                                                               │
                                        AutoModelForCausalLM (frozen; optional LoRA) ──▶ last hidden
                                                               │
                                  logits (LLM rows + own rows) and, at number tokens, the number head

Parts (each its own module): the encoder (``spectravlm.encoders``), :class:`~.bridge.QFormerBridge`,
the LLM (any ``AutoModelForCausalLM``, loaded by reference), :class:`~.vocab.AddedTokens` (the rows
of the tokens spectravlm adds, trainable while the LLM is frozen), and the number modules of
:mod:`spectravlm.numeric` (``xval`` mode). :meth:`SpectraVLM.number_values` is the one place where a
value is read from a hidden state: the follow-up number gate (issue 16) replaces it.

Only the last hidden state is kept from the LLM (``output_hidden_states=[-1]``), and logits only
where a loss needs them (``logits_to_keep``: the positions before a label when training, the last
one when generating).

Axis legend: ``b`` prompts, ``l`` positions, ``s`` scenes, ``q`` queries, ``d`` LLM width, ``v``
vocabulary.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectravlm.encoders.outputs import EncoderOutput
from spectravlm.encoders.spectral import SpectralEncoder
from spectravlm.errors import ModelConfigError
from spectravlm.numeric.modules import NumberEmbedding, NumberHead, NumberHeadOutput, scale_values
from spectravlm.numeric.tokenizer import NumericTokenizer
from spectravlm.stack import SensorStack
from spectravlm.vlm.bridge import QFormerBridge
from spectravlm.vlm.config import LLMConfig, SpectraVLMConfig
from spectravlm.vlm.lora import apply_lora
from spectravlm.vlm.processor import SpectraVLMProcessor, VLMInputs, added_tokens, prepare_tokenizer
from spectravlm.vlm.vocab import AddedTokens

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer

    from spectravlm.vlm.generation import VLMGeneration

Scenes = SensorStack | Sequence[SensorStack]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class SceneEmbeddings:
    """The scenes of a batch as the LLM receives them.

    Attributes:
        embeds: ``[s, q, d]`` image tokens (float32, from the bridge).
        queries: ``[s, q, h]`` the Q-Former's output queries.
        encoder: The encoder's output of each :class:`SensorStack` given, in order (scenes are their
            batch rows, concatenated).
        rows: ``[s]`` the prompt row each scene belongs to (``-1`` when encoded without prompts).

    """

    embeds: Tensor
    queries: Tensor
    encoder: list[EncoderOutput]
    rows: Tensor


@dataclass
class SpectraVLMOutput:
    """One forward pass.

    Attributes:
        logits: Float32 logits over the full vocabulary (token id = index): ``[b, k, v]`` for the
            kept positions, or ``[K, v]`` at the ``K`` positions before a label when training.
        hidden_states: ``[b, l, d]`` the LLM's last hidden states.
        number_values: ``[b, l]`` float32 value the number path reads at each position (the value of
            a number token at ``l + 1``); ``None`` without number modules.
        loss: ``lm_loss + number_loss_weight * number_loss`` (with labels).
        lm_loss: Next-token cross-entropy over the labelled positions.
        number_loss: Scaled-value MSE at labelled number tokens (0 with a graph when there are none).
        scenes: The scene embeddings used (``None`` for text-only input).

    """

    logits: Tensor
    hidden_states: Tensor
    number_values: Tensor | None = None
    loss: Tensor | None = None
    lm_loss: Tensor | None = None
    number_loss: Tensor | None = None
    scenes: SceneEmbeddings | None = None


def load_llm(config: LLMConfig, path: str | None = None) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` of the reference (or of ``path``), as configured."""
    from transformers import AutoModelForCausalLM

    dtype: Any = "auto" if config.dtype == "auto" else _DTYPES[config.dtype]
    kwargs: dict[str, Any] = {"revision": config.revision}
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path or config.name_or_path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelConfigError(f"cannot load the LLM {path or config.name_or_path!r}: {err}") from err


def load_tokenizer(config: LLMConfig) -> Any:
    """``AutoTokenizer.from_pretrained`` of the LLM's tokenizer reference."""
    from transformers import AutoTokenizer

    name = config.tokenizer or config.name_or_path
    try:
        return AutoTokenizer.from_pretrained(name, revision=config.revision)
    except (OSError, ValueError) as err:
        raise ModelConfigError(f"cannot load the tokenizer {name!r}: {err}") from err


def embedding_fingerprint(weight: Tensor, rows: int) -> str:
    """A short hash of the first ``rows`` embedding rows, rounded to bfloat16 (load dtype does not matter)."""
    data = weight.detach()[:rows].to(device="cpu", dtype=torch.bfloat16).contiguous().view(torch.int16)
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]


class SpectraVLM(nn.Module):
    """Encoder + Q-Former bridge + causal LLM, with numbers as values.

    Args:
        config: The composite config; sizes that follow from the parts are derived here.
        encoder: The encoder (default: loaded from ``config.encoder_path``, else built from
            ``config.encoder`` with fresh weights).
        llm: The causal LM (default: ``AutoModelForCausalLM.from_pretrained(config.llm.name_or_path)``).
        tokenizer: The LLM's tokenizer or an already wrapped :class:`NumericTokenizer` (default:
            ``AutoTokenizer.from_pretrained`` of ``config.llm.tokenizer or config.llm.name_or_path``).
        initialise_bridge: Load ``config.bridge.init_from`` (False when weights follow from a save).

    The model is built in eval mode (as transformers' ``from_pretrained`` returns models); call
    ``train()`` to train. A frozen encoder, and a frozen LLM without LoRA, stay in eval mode.

    Attributes:
        num_token_ids: ``[k]`` ids of the number tokens that carry values (empty unless ``xval``).

    Examples:
        >>> config = SpectraVLMConfig.create("runs/encoder", "Qwen/Qwen2.5-0.5B")  # doctest: +SKIP
        >>> model = SpectraVLM(config)  # doctest: +SKIP
        >>> out = model.generate(stack, ["<image> What is the mean AGB?"])  # doctest: +SKIP
        >>> out.texts[0], out.numbers[0]  # doctest: +SKIP
        ('The mean AGB is 152.3 t/ha', [152.3])

    """

    num_token_ids: Tensor

    def __init__(
        self,
        config: SpectraVLMConfig,
        encoder: SpectralEncoder | None = None,
        llm: nn.Module | None = None,
        tokenizer: Any = None,
        initialise_bridge: bool = True,
    ) -> None:
        super().__init__()
        if encoder is None:
            if config.encoder_path:
                encoder = SpectralEncoder.from_pretrained(config.encoder_path)
            else:
                encoder = SpectralEncoder(config.encoder)
        config.encoder = encoder.config
        if config.gradient_checkpointing:
            encoder.config.gradient_checkpointing = True
        self.encoder = encoder

        wrapped = prepare_tokenizer(
            load_tokenizer(config.llm) if tokenizer is None else tokenizer, config.numeric, config.image_token
        )
        base, added = added_tokens(wrapped, config.image_token)
        llm = load_llm(config.llm) if llm is None else llm
        if getattr(llm, "peft_config", None) is not None:
            raise ModelConfigError(
                "pass the LLM without adapters; SpectraVLM applies LoRA from config.llm.lora"
            )
        rows = llm.get_input_embeddings().num_embeddings  # type: ignore[operator]
        if base > rows:
            raise ModelConfigError(
                f"the tokenizer has {base} tokens but the LLM ({type(llm).__name__}) embeds only {rows}: "
                "they do not belong together"
            )
        config.derive(llm.config, base, added)
        self.config = config
        self.processor = SpectraVLMProcessor(wrapped, config.bridge.num_query_tokens, config.image_token)
        self._cache_kwarg = (
            "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
        )

        self.bridge = QFormerBridge(config.bridge, initialise=initialise_bridge)
        self.vocab = AddedTokens(base, len(added), config.llm.hidden_size)
        output = llm.get_output_embeddings()  # type: ignore[operator]
        self.vocab.init_from(
            llm.get_input_embeddings().weight,  # type: ignore[operator]
            None if output is None else output.weight,
        )
        num = config.numeric
        xval = num.mode == "xval"
        self.number_embedding = (
            NumberEmbedding(config.llm.hidden_size, num.combine, num.scaling, num.scale) if xval else None
        )
        self.number_head = (
            NumberHead(config.llm.hidden_size, scaling=num.scaling, scale=num.scale) if xval else None
        )
        self.register_buffer(
            "num_token_ids",
            torch.tensor(list(wrapped.num_token_ids) if xval else [], dtype=torch.long),
            persistent=False,
        )

        fingerprint = embedding_fingerprint(llm.get_input_embeddings().weight, base)  # type: ignore[operator]
        if config.llm.fingerprint and config.llm.fingerprint != fingerprint:
            raise ModelConfigError(
                f"the LLM loaded from {config.llm.name_or_path!r} is not the one this model was saved with "
                "(its input embeddings differ); load the same LLM (name, revision) or pass it as llm="
            )
        config.llm.fingerprint = fingerprint

        self.encoder.requires_grad_(not config.freeze_encoder)
        llm.requires_grad_(not config.llm.freeze)
        if config.gradient_checkpointing:
            _checkpointing(llm)
            _checkpointing(self.bridge.qformer)
        if config.llm.lora is not None:
            llm = apply_lora(llm, config.llm.lora, config.llm.model_type)
        self.llm = llm
        self.train(False)

    # ---- parts ------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> NumericTokenizer:
        """The wrapped tokenizer (number and placeholder tokens included)."""
        return self.processor.tokenizer

    @property
    def base_llm(self) -> nn.Module:
        """The ``AutoModelForCausalLM`` itself (inside the peft wrapper when LoRA is on)."""
        get = getattr(self.llm, "get_base_model", None)
        return self.llm if get is None else get()

    def train(self, mode: bool = True) -> SpectraVLM:
        """Set training mode; a frozen encoder (and a frozen LLM without LoRA) stays in eval mode."""
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        if self.config.llm.freeze and self.config.llm.lora is None:
            self.llm.eval()
        return self

    # ---- scenes -----------------------------------------------------------------------------------

    def embed_scenes(
        self,
        scenes: Scenes,
        instruction: Tensor | None = None,
        instruction_mask: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> SceneEmbeddings:
        """Encode scenes and bridge them into image tokens.

        Args:
            scenes: A :class:`SensorStack` (its batch rows are the scenes) or several (each may have
                other bands or window sizes; their scenes follow one another).
            instruction: ``[s, l, d]`` prompt embeddings per scene (instruction-aware bridges).
            instruction_mask: ``[s, l]`` True at the prompt's text tokens.
            rows: ``[s]`` the prompt row of each scene (kept in the output).

        Raises:
            ModelConfigError: A sensor the encoder does not take; a scene without any valid token.

        """
        stacks = [scenes] if isinstance(scenes, SensorStack) else list(scenes)
        device = self.bridge.query_tokens.device
        embeds, queries, outputs, offset = [], [], [], 0
        for k, stack in enumerate(stacks):
            if not isinstance(stack, SensorStack):
                raise ModelConfigError(f"scenes[{k}] is a {type(stack).__name__}; expected a SensorStack")
            for group, series in stack.series.items():
                if series.sensor not in self.encoder.config.sensors:
                    raise ModelConfigError(
                        f"scene group {group!r} is {series.sensor}, which this model's encoder does not "
                        f"take; it takes {', '.join(self.encoder.config.sensors)}"
                    )
            out = self.encoder.forward_features(stack.to(device))
            empty = (~out.mask.any(1)).nonzero().flatten().tolist()
            if empty:
                raise ModelConfigError(
                    f"scene(s) {[offset + i for i in empty]} have no valid token (every date missing, or "
                    f"under {self.encoder.config.min_valid_fraction:.0%} valid pixels in every patch); "
                    "nothing to describe"
                )
            n = out.tokens.shape[0]
            part = slice(offset, offset + n)
            bridged = self.bridge(
                out.tokens,
                out.mask,
                None if instruction is None else instruction[part],
                None if instruction_mask is None else instruction_mask[part],
            )
            embeds.append(bridged.embeds)
            queries.append(bridged.queries)
            outputs.append(out)
            offset += n
        if rows is None:
            rows = torch.full((offset,), -1, dtype=torch.long, device=device)
        return SceneEmbeddings(torch.cat(embeds), torch.cat(queries), outputs, rows)

    # ---- text -------------------------------------------------------------------------------------

    def embed_tokens(self, input_ids: Tensor, numbers: Tensor | None, number_mask: Tensor | None) -> Tensor:
        """``[b, l]`` ids (and values) to ``[b, l, d]`` LLM input embeddings (placeholders not yet filled)."""
        embeds = self.vocab.embed(input_ids, self.llm.get_input_embeddings())  # type: ignore[operator]
        if self.number_embedding is None:
            return embeds
        if numbers is None or number_mask is None:
            if bool(torch.isin(input_ids, self.num_token_ids).any()):
                raise ModelConfigError("input_ids hold number tokens; pass numbers= and number_mask=")
            return embeds
        return self.number_embedding(embeds, numbers, number_mask)

    def embed_inputs(
        self,
        scenes: Scenes | None,
        input_ids: Tensor,
        attention_mask: Tensor,
        numbers: Tensor | None = None,
        number_mask: Tensor | None = None,
    ) -> tuple[Tensor, SceneEmbeddings | None]:
        """Embeddings of prompts with the scenes in place of their placeholders.

        Scene ``i`` fills the ``i``-th placeholder run, counting across the batch in order.

        Raises:
            ModelConfigError: Placeholders and scenes that do not pair up (naming the prompts).

        """
        embeds = self.embed_tokens(input_ids, numbers, number_mask)
        q = self.config.bridge.num_query_tokens
        image_mask = (input_ids == self.processor.image_token_id) & attention_mask.bool()
        per_row = (image_mask.sum(1) // q).tolist()
        n_scenes = 0 if scenes is None else _count_scenes(scenes)
        if scenes is None or n_scenes == 0:
            if any(per_row):
                raise ModelConfigError(
                    f"prompts {[i for i, c in enumerate(per_row) if c]} hold {self.config.image_token!r} "
                    "placeholders but no scene was given"
                )
            return embeds, None
        without = [i for i, c in enumerate(per_row) if c == 0]
        if without:
            raise ModelConfigError(
                f"prompt(s) {without} have no {self.config.image_token!r} placeholder, but {n_scenes} "
                f"scene(s) were given; write {self.config.image_token!r} where each scene goes"
            )
        if sum(per_row) != n_scenes:
            raise ModelConfigError(
                f"the prompts hold {sum(per_row)} {self.config.image_token!r} placeholders ({per_row} per "
                f"prompt) for {n_scenes} scene(s); give one scene per placeholder"
            )
        rows = torch.repeat_interleave(
            torch.arange(len(per_row), device=input_ids.device), image_mask.sum(1) // q
        )
        instruction = instruction_mask = None
        if self.config.bridge.instruction_aware:
            instruction = embeds[rows]
            instruction_mask = (attention_mask.bool() & ~image_mask)[rows]
        scene = self.embed_scenes(scenes, instruction, instruction_mask, rows)
        filled = embeds.masked_scatter(image_mask.unsqueeze(-1), scene.embeds.to(embeds.dtype))
        return filled, scene

    # ---- the LLM ----------------------------------------------------------------------------------

    def llm_forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        logits_to_keep: int | Tensor = 0,
        cache: Any = None,
        use_cache: bool = False,
    ) -> Any:
        """One call of the LLM that keeps only its last hidden state (keyword arguments only)."""
        kwargs: dict[str, Any] = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": use_cache,
            "output_hidden_states": [-1],
            "logits_to_keep": logits_to_keep,
        }
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        return self.llm(**kwargs)

    def number_values(self, hidden_states: Tensor, scenes: SceneEmbeddings | None) -> NumberHeadOutput:
        """The value a number token after each position would carry: the one place numbers are read.

        Args:
            hidden_states: ``[b, l, d]`` the LLM's last hidden states.
            scenes: The scenes of the batch (``scenes.rows`` maps them to prompt rows), for a number
                path that reads values from the scenes (the number gate of issue 16).

        Returns:
            Float32 scaled and raw values ``[b, l]``.

        """
        if self.number_head is None:
            raise ModelConfigError(f"numeric mode {self.config.numeric.mode!r} has no number head")
        return self.number_head(hidden_states)

    def forward(
        self,
        scenes: Scenes | None,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        numbers: Tensor | None = None,
        number_mask: Tensor | None = None,
        labels: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> SpectraVLMOutput:
        """Run the model on prompts with scenes (see :class:`SpectraVLMOutput`).

        Args:
            scenes: The scenes for the prompts' placeholders (``None``: text only).
            input_ids: ``[b, l]`` from the processor.
            attention_mask: ``[b, l]`` (all ones when omitted).
            numbers: ``[b, l]`` values (``xval``).
            number_mask: ``[b, l]`` number tokens (``xval``).
            labels: ``[b, l]`` target ids, ``-100`` off the answer; logits are then kept only at the
                positions before a label.
            logits_to_keep: Without labels: logits of the last ``k`` positions (0: all).

        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds, scene = self.embed_inputs(scenes, input_ids, attention_mask, numbers, number_mask)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        keep: Tensor | None = None
        if labels is not None:
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100
        out = self.llm_forward(embeds, attention_mask, position_ids, logits_to_keep if keep is None else keep)
        hidden = out.hidden_states[-1]
        values = None if self.number_head is None else self.number_values(hidden, scene)
        if keep is None:
            kept = hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]
            logits = self.vocab.logits(out.logits, kept)
            return SpectraVLMOutput(logits, hidden, None if values is None else values.values, scenes=scene)
        assert labels is not None
        logits = self.vocab.logits(out.logits, hidden[keep])
        lm_loss = F.cross_entropy(logits, labels[:, 1:][keep[:, :-1]])
        result = SpectraVLMOutput(
            logits, hidden, None if values is None else values.values, lm_loss, lm_loss, scenes=scene
        )
        if values is not None and numbers is not None and number_mask is not None:
            targets = keep[:, :-1] & number_mask[:, 1:].bool()
            predicted = values.scaled[:, :-1][targets]
            wanted = scale_values(
                numbers[:, 1:][targets].float(), self.config.numeric.scaling, self.config.numeric.scale
            )
            number_loss = F.mse_loss(predicted, wanted) if predicted.numel() else values.scaled.sum() * 0.0
            result.number_loss = number_loss
            result.loss = lm_loss + self.config.numeric.number_loss_weight * number_loss
        return result

    # ---- generation and saving (their own modules) ------------------------------------------------

    def generate(
        self,
        scenes: Scenes | None,
        prompts: str | Sequence[str],
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        stop_strings: str | Sequence[str] | None = None,
        streamer: BaseStreamer | None = None,
        logits_processor: Any = None,
        generator: torch.Generator | None = None,
    ) -> VLMGeneration:
        """Answer prompts about scenes, batched (see :func:`spectravlm.vlm.generation.generate`)."""
        from spectravlm.vlm.generation import generate

        return generate(
            self,
            scenes,
            prompts,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop_strings=stop_strings,
            streamer=streamer,
            logits_processor=logits_processor,
            generator=generator,
        )

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the whole model into folder ``path`` (see :mod:`spectravlm.vlm.saving`)."""
        from spectravlm.vlm.saving import save_vlm

        return save_vlm(self, path, overwrite=overwrite)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, llm: nn.Module | None = None, device: str | torch.device = "cpu"
    ) -> SpectraVLM:
        """Load a model saved by :meth:`save_pretrained` (the LLM through its reference, or ``llm``)."""
        from spectravlm.vlm.saving import load_vlm

        return load_vlm(path, llm=llm, device=device)

    def inputs(self, prompts: str | Sequence[str], targets: str | Sequence[str] | None = None) -> VLMInputs:
        """The processor's tensors for ``prompts`` (and ``targets``), on the model's device."""
        return self.processor(prompts, targets, device=self.bridge.query_tokens.device)


def _checkpointing(model: nn.Module) -> None:
    """Turn on a transformers model's activation checkpointing (non-reentrant: frozen weights work)."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # pragma: no cover - older transformers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]


def _count_scenes(scenes: Scenes) -> int:
    if isinstance(scenes, SensorStack):
        return scenes.batch_size
    return sum(s.batch_size for s in scenes)
