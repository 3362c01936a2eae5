"""``VLMTask``: train SpectraVLM on instruction data from stores, numbers from the regression heads.

The model is :class:`~spectravlm.vlm.model.SpectraVLM` (encoder, Q-Former bridge, any causal LLM, numbers as
values) with, in ``xval`` mode, the number gate (:mod:`spectravlm.vlm.gate`) over the LLM's own number head
and the experts: regression heads evaluated on the region each question names, and statistics of the scene.
The data is :class:`~spectravlm.data.instructions.QADataModule` (``spectravlm data qa``). This class adds the
two training stages, the loss, the metrics and the saved model:

* **Stage 1** (the first ``stage1_steps`` optimiser steps): the bridge and the rows of the added tokens train,
  the LLM is frozen; the loss is the LM loss on the answer tokens.
* **Stage 2** (the rest): LoRA on the LLM (``lora``), the number modules (number embedding, number head)
  and the gate (and trainable experts) train as well; the loss is the LM loss
  + ``numeric.number_loss_weight`` x the number loss at the value tokens (on the gate's mixed value)
  + ``route_weight`` x the gate's routing term + ``balance_weight`` x its load-balancing term.
* **Metrics** (validation and test): the loss, and answers generated greedily for every record: exact-answer
  rate, RMSE and MAE of the stated value per question type in the question's units, the gate's weights per
  type (:class:`~spectravlm.vlm.metrics.AnswerMetrics`); ``test`` prints the table.
* **Experts** (``experts``): each a :class:`~spectravlm.vlm.experts.ExpertConfig`; a ``head`` expert's model
  comes from ``source``: a folder written by :func:`~spectravlm.vlm.experts.save_predictor`, a regression task
  checkpoint (``.ckpt``), or ``fit``: a :class:`~spectravlm.vlm.experts.LinearDenseRegressor` fit in closed
  form on the training windows' target named by the expert's quantity when the fit starts.
  ``scene_statistics`` adds the statistic experts of :func:`~spectravlm.vlm.experts.default_experts`.
  Experts' units are checked against the units of the questions about their quantity in the data (``t/ha``
  and ``Mg/ha`` agree, ``t/ha`` and ``%`` do not).
* **Output**: with ``output_dir``, the trained model is written there with ``save_pretrained`` when the fit
  ends (``spectravlm ask --model output_dir``). Checkpoints leave out the frozen LLM's weights, which load
  from the LLM's reference.

From the command line::

    spectravlm data demo data/demo.zarr --size 256 --overwrite
    spectravlm data qa data/demo.zarr data/demo_qa.jsonl --overwrite
    spectravlm data tiny-llm runs/tiny_llm --qa data/demo_qa.jsonl --overwrite
    spectravlm fit --config configs/vlm_demo.yaml
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from spectravlm.data.instructions import DEFAULT_TEMPLATE, QABatch, QADataModule
from spectravlm.data.qa import QUESTION_TYPES
from spectravlm.encoders.spectral import SpectralEncoder, build_encoder, load_encoder
from spectravlm.errors import ModelConfigError, UnknownUnitError
from spectravlm.io import OutputExistsError
from spectravlm.tasks.base import BaseTask
from spectravlm.vlm import (
    ExpertConfig,
    GateConfig,
    LinearDenseRegressor,
    LLMConfig,
    LoraSettings,
    NumericConfig,
    QFormerBridgeConfig,
    SpectraVLM,
    SpectraVLMConfig,
    default_experts,
)
from spectravlm.vlm.config import LLMDtype
from spectravlm.vlm.experts import HeadExpert, check_units, load_predictor, same_units
from spectravlm.vlm.metrics import AnswerMetrics, format_report

FIT = "fit"
"""Expert ``source`` that fits a :class:`LinearDenseRegressor` on the training windows when the fit starts."""


class VLMTask(BaseTask):
    """Train a :class:`SpectraVLM` on question/answer data from cube stores (see the module docstring).

    Args:
        llm: The causal LM: a hub name or a local folder (``AutoModelForCausalLM.from_pretrained``).
        encoder: A pretrained encoder (a ``save_pretrained`` folder or a task ``.ckpt``) or a named size for a
            new one (``test``, ``tiny``, ``small``, ``base``).
        patch_size: Patch edge of a new encoder.
        tokenizer: The LLM's tokenizer when not beside it.
        llm_dtype: Dtype the LLM's weights load in (``bfloat16`` on a GPU).
        attn_implementation: The LLM's attention (``sdpa``, ``eager``; default: transformers').
        bridge: The Q-Former (default: BLIP-2 sized).
        numeric: Number tokenization and the number loss (``xval``, ``digits``, ``none``).
        lora: LoRA on the LLM in stage 2 (``None``: the LLM stays as it is).
        gate: Put the number gate over the number head (``xval`` only).
        experts: The gate's experts beside the scene statistics (regression heads: ``kind: head``).
        scene_statistics: Add the scene-statistic experts for the encoder's sensor kinds.
        gate_hidden_size: Width of the gate's hidden layer (0: linear).
        balance_weight: Weight of the gate's load-balancing term.
        route_weight: Weight of the gate's routing term (each source's own error, gate-weighted; it sharpens
            the weights onto the sources that are right alone).
        gate_stated: What a generated number states: the top source's value (``top1``) or the ``mixture``.
        stage1_steps: Optimiser steps of stage 1 (0: start in stage 2).
        freeze_encoder: Keep the encoder fixed (in eval mode).
        gradient_checkpointing: Recompute activations in backward (encoder, Q-Former, LLM).
        prompt_template: How a question becomes the prompt (``{question}``), saved with the model.
        output_dir: Write the trained model here (``save_pretrained``) when the fit ends.
        overwrite_output: Replace an existing ``output_dir``.
        max_new_tokens: Longest generated answer in validation and test.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: Share of the steps with a linear warm-up.
        min_lr_ratio: Final learning rate / ``lr``.
        seed: Seed of the per-batch randomness.

    """

    architecture_keys: ClassVar[tuple[str, ...]] = (
        "llm",
        "encoder",
        "patch_size",
        "bridge",
        "numeric",
        "lora",
        "gate",
        "experts",
        "scene_statistics",
        "gate_hidden_size",
    )

    def __init__(
        self,
        llm: str,
        encoder: str = "test",
        patch_size: int = 8,
        tokenizer: str | None = None,
        llm_dtype: LLMDtype = "float32",
        attn_implementation: str | None = None,
        bridge: QFormerBridgeConfig | None = None,
        numeric: NumericConfig | None = None,
        lora: LoraSettings | None = None,
        gate: bool = True,
        experts: list[ExpertConfig] | None = None,
        scene_statistics: bool = True,
        gate_hidden_size: int = 0,
        balance_weight: float = 0.0,
        route_weight: float = 1.0,
        gate_stated: Literal["top1", "mixture"] = "top1",
        stage1_steps: int = 0,
        freeze_encoder: bool = True,
        gradient_checkpointing: bool = False,
        prompt_template: str = DEFAULT_TEMPLATE,
        output_dir: str | None = None,
        overwrite_output: bool = False,
        max_new_tokens: int = 48,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup: float = 0.05,
        min_lr_ratio: float = 0.1,
        seed: int = 0,
    ) -> None:
        if stage1_steps < 0 or max_new_tokens < 1:
            raise ModelConfigError(
                f"stage1_steps ({stage1_steps}) must be >= 0 and max_new_tokens ({max_new_tokens}) >= 1"
            )
        betas = (float(betas[0]), float(betas[1]))
        # the configs are kept as plain dicts in the hyperparameters, so that a checkpoint loads with
        # torch.load(weights_only=True) (Lightning's default) and compares by value with another run's
        bridge, numeric, lora = _plain(bridge), _plain(numeric), _plain(lora)
        experts = None if experts is None else [_plain(e) for e in experts]
        self.stage = 0
        self.report: dict[str, Any] = {}
        super().__init__()

    # ---- model -------------------------------------------------------------------------------------

    def configure_models(self) -> None:
        """The encoder (pretrained or new), the LLM by reference, the bridge, the number modules, the gate."""
        hp: Any = self.hparams
        path = Path(hp.encoder)
        if path.exists():
            encoder = load_encoder(path)
            self.encoder_loaded = True
        else:
            encoder = build_encoder(hp.encoder, hp.patch_size)
        numeric = _config(NumericConfig, hp.numeric) or NumericConfig()
        gate = None
        predictors: dict[str, nn.Module] = {}
        if hp.gate and numeric.mode == "xval":
            chosen = [ExpertConfig.from_dict(e) for e in hp.experts or []]
            if hp.scene_statistics:
                kinds = {_kind(s) for s in encoder.config.sensors}
                chosen += default_experts(optical="optical" in kinds, sar="sar" in kinds)
            predictors = {e.name: self._predictor(e, encoder) for e in chosen if e.kind == "head"}
            gate = GateConfig(
                tuple(chosen), hp.gate_hidden_size, hp.balance_weight, hp.route_weight, hp.gate_stated
            )
        elif hp.experts:
            raise ModelConfigError("experts need the number gate: set gate: true and numeric.mode: xval")
        config = SpectraVLMConfig(
            encoder=encoder.config,
            llm=LLMConfig(
                name_or_path=hp.llm, tokenizer=hp.tokenizer, dtype=hp.llm_dtype,
                attn_implementation=hp.attn_implementation, lora=_config(LoraSettings, hp.lora),
            ),
            bridge=_config(QFormerBridgeConfig, hp.bridge) or QFormerBridgeConfig(),
            numeric=numeric,
            freeze_encoder=hp.freeze_encoder,
            gradient_checkpointing=hp.gradient_checkpointing,
            gate=gate,
            prompt_template=hp.prompt_template,
        )  # fmt: skip
        self.model = SpectraVLM(config, encoder=encoder, experts=predictors)
        self._set_stage(1 if hp.stage1_steps > 0 else 2)

    def _predictor(self, expert: ExpertConfig, encoder: SpectralEncoder) -> nn.Module:
        """The regression model of a ``head`` expert, from its ``source``."""
        source = expert.source
        if source == FIT:
            return LinearDenseRegressor(asdict(encoder.config))
        if source is None:
            raise ModelConfigError(
                f"expert {expert.name!r} needs a source: a predictor folder, a regression checkpoint or 'fit'"
            )
        path = Path(source)
        if path.is_dir():
            return load_predictor(path)
        if path.suffix == ".ckpt" and path.is_file():
            return _checkpoint_predictor(path, expert)
        raise ModelConfigError(
            f"expert {expert.name!r}: source {source!r} is neither a predictor folder, a .ckpt file nor 'fit'"
        )

    @property
    def _hp(self) -> Any:
        """The hyperparameters, read as attributes."""
        return self.hparams

    @property
    def encoder(self) -> SpectralEncoder:
        """The VLM's encoder."""
        return self.model.encoder

    def configure_metrics(self) -> None:
        """One :class:`AnswerMetrics` per evaluation stage."""
        sources = () if self.model.gate is None else self.model.gate.sources
        self.val_answers = AnswerMetrics(list(QUESTION_TYPES), sources)
        self.test_answers = AnswerMetrics(list(QUESTION_TYPES), sources)

    # ---- stages ------------------------------------------------------------------------------------

    def stage2_parameters(self) -> list[nn.Parameter]:
        """What starts training in stage 2: LoRA, the number modules, the gate, trainable experts."""
        model = self.model
        params = [p for n, p in model.llm.named_parameters() if "lora_" in n]
        for part in (model.number_embedding, model.number_head, model.gate):
            if part is not None:
                params += list(part.parameters())
        for expert in model.experts_by_name.values():
            if expert.config.trainable:
                params += list(expert.parameters())
        return params

    def _set_stage(self, stage: int) -> None:
        if stage == self.stage:
            return
        for p in self.stage2_parameters():
            p.requires_grad_(stage == 2)
        self.stage = stage

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The base groups over every parameter that trains in some stage (stage 2's from the start)."""
        before = self.stage
        self._set_stage(2)
        try:
            return super().parameter_groups()
        finally:
            self._set_stage(before)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Enter stage 2 after ``stage1_steps`` optimiser steps (also when resuming)."""
        self._set_stage(1 if self.global_step < self._hp.stage1_steps else 2)

    # ---- data --------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Hand the processor to the data, check the experts' units, fit ``fit`` experts, check the output."""
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not isinstance(dm, QADataModule):
            return
        fit_targets = sorted(
            {
                e.config.quantity
                for e in self.model.experts
                if isinstance(e, HeadExpert) and e.config.source == FIT
            }
        )
        dm.attach(self.model.processor, self.model.config.prompt_template, targets=fit_targets)
        dm.setup(stage)
        records = [r for ds in dm.splits.values() for r in ds.records]
        sizes = {r.window["size"] for r in records}
        if len(sizes) == 1:
            self.model.config.window_size = sizes.pop()
        self.check_units({r.type for r in records})
        if stage == "fit":
            out = self._hp.output_dir
            if out is not None and Path(out).exists() and not self._hp.overwrite_output:
                raise OutputExistsError(
                    f"output_dir {out} already exists; set overwrite_output: true to replace it"
                )
            if not self.encoder_loaded:
                self.adopt_qa_statistics(dm)
            self.fit_experts(dm)

    def check_units(self, types: set[str]) -> None:
        """Refuse an expert whose units differ from those of the questions about its quantity."""
        for qtype in sorted(types):
            spec = QUESTION_TYPES.get(qtype)
            if spec is None:
                continue
            for expert in self.model.experts_by_name.values():
                if expert.quantity == spec.quantity:
                    check_units(expert.name, expert.units, f"{qtype}", spec.units)

    def adopt_qa_statistics(self, dm: QADataModule) -> None:
        """A new encoder takes the statistics of the training records' stores (as BaseTask does for cubes)."""
        from spectravlm.encoders.statistics import store_statistics

        ds = dm.splits["train"]
        stats: dict[str, list[Any]] = {}
        for key in ds._keys:
            for sensor, entries in ds._dataset(key).sensor_statistics().items():
                stats.setdefault(sensor, []).extend(entries)
        for sensor, (values, source) in store_statistics(stats).items():
            usable = {b: ms for b, ms in values.items() if ms[1] > 0}
            if usable and sensor in self.encoder.config.sensors:
                self.encoder.set_statistics(sensor, usable, source)

    def fit_experts(self, dm: QADataModule) -> None:
        """Fit the ``fit`` experts that are not fitted yet on the training windows (closed form)."""
        for expert in self.model.experts:
            if not (isinstance(expert, HeadExpert) and expert.config.source == FIT):
                continue
            predictor = expert.predictor
            assert isinstance(predictor, LinearDenseRegressor)
            if bool(predictor.fitted):
                continue
            predictor.encoder.load_state_dict(self.encoder.state_dict())
            predictor.fit(dm.splits["train"].window_scenes(), target=expert.quantity, seed=self.seed)

    # ---- steps -------------------------------------------------------------------------------------

    def forward(self, batch: QABatch) -> Any:
        """The model's output on a batch (loss with the answers' labels)."""
        if batch.inputs is None:
            raise ModelConfigError("the batch is not tokenized: the data module needs the model's processor")
        return self.model(batch.scenes, regions=batch.regions, **batch.inputs.model_kwargs())

    def _loss(self, batch: QABatch, stage: str) -> Tensor:
        out = self(batch)
        loss = out.lm_loss if self.stage == 1 and stage == "train" else out.loss
        n = batch.batch_size
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/lm_loss", out.lm_loss, batch_size=n, sync_dist=sync)
        if out.number_loss is not None:
            self.log(f"{stage}/number_loss", out.number_loss, batch_size=n, sync_dist=sync)
        if out.balance_loss is not None:
            self.log(f"{stage}/balance_loss", out.balance_loss, batch_size=n, sync_dist=sync)
        if out.route_loss is not None:
            self.log(f"{stage}/route_loss", out.route_loss, batch_size=n, sync_dist=sync)
        return loss

    def training_step(self, batch: QABatch, batch_idx: int) -> Tensor:
        """LM loss (stage 1), + number and balance losses (stage 2)."""
        self.log("train/stage", float(self.stage), batch_size=batch.batch_size)
        return self._loss(batch, "train")

    def answer(self, batch: QABatch) -> Any:
        """Greedy answers to the batch's prompts (with each number's source)."""
        return self.model.generate(
            batch.scenes, batch.prompts, regions=batch.regions, max_new_tokens=self._hp.max_new_tokens
        )

    def _evaluate(self, batch: QABatch, metrics: AnswerMetrics, stage: str) -> None:
        self._loss(batch, stage)
        out = self.answer(batch)
        metrics.update(
            [r.type for r in batch.records],
            out.texts,
            [r.reply for r in batch.records],
            out.numbers,
            [r.answer.get("value") for r in batch.records],
            out.sources or None,
        )

    def validation_step(self, batch: QABatch, batch_idx: int) -> None:
        """Loss and generated answers' metrics."""
        self._evaluate(batch, self.val_answers, "val")

    def test_step(self, batch: QABatch, batch_idx: int) -> None:
        """Loss and generated answers' metrics on the held-out records."""
        self._evaluate(batch, self.test_answers, "test")

    def _log_answers(self, metrics: AnswerMetrics, stage: str) -> dict[str, Any]:
        report = metrics.compute()
        metrics.reset()
        for qtype, row in report.items():
            self.log(f"{stage}/exact_{qtype}", row["exact"], sync_dist=False)
            if qtype != "all" and row["rmse"] == row["rmse"]:
                self.log(f"{stage}/rmse_{qtype}", row["rmse"], sync_dist=False)
                self.log(f"{stage}/mae_{qtype}", row["mae"], sync_dist=False)
        self.report = report
        return report

    def on_validation_epoch_end(self) -> None:
        """Log the answers' metrics per question type."""
        self._log_answers(self.val_answers, "val")

    def on_test_epoch_end(self) -> None:
        """Log the answers' metrics and print their table."""
        report = self._log_answers(self.test_answers, "test")
        if self.global_rank == 0 and report:
            units = {t: s.units for t, s in QUESTION_TYPES.items()}
            print("held-out (test) answers\n" + format_report(report, units))

    def predict_step(self, batch: QABatch, batch_idx: int) -> list[dict[str, Any]]:
        """The generated answer of every record, with its numbers and their sources."""
        out = self.answer(batch)
        rows = []
        for k, record in enumerate(batch.records):
            rows.append(
                {
                    "id": record.id,
                    "answer": out.texts[k].strip(),
                    "numbers": out.numbers[k],
                    "sources": [asdict(s) for s in out.sources[k]] if out.sources else [],
                }
            )
        return rows

    # ---- saving ------------------------------------------------------------------------------------

    def on_fit_end(self) -> None:
        """Write the trained model to ``output_dir`` (rank 0)."""
        out = self._hp.output_dir
        if out is not None and self.global_rank == 0:
            self.model.save_pretrained(out, overwrite=bool(self._hp.overwrite_output))

    def _frozen_llm_keys(self) -> list[str]:
        """State-dict keys of the LLM's own frozen weights and buffers (tied weights included; LoRA not)."""
        prefix = "model.llm."
        return [
            k
            for k, v in self.state_dict(keep_vars=True).items()
            if k.startswith(prefix)
            and "lora_" not in k
            and not (isinstance(v, nn.Parameter) and v.requires_grad)
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Base metadata; the frozen LLM's own weights are left out (they load from the LLM's reference)."""
        super().on_save_checkpoint(checkpoint)
        if self.model.config.llm.freeze:
            state = checkpoint["state_dict"]
            for key in self._frozen_llm_keys():
                state.pop(key, None)
            checkpoint["spectravlm"]["llm"] = asdict(self.model.config.llm)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Base checks; the left-out LLM weights come from the LLM loaded by reference (by fingerprint)."""
        super().on_load_checkpoint(checkpoint)
        saved = (checkpoint.get("spectravlm") or {}).get("llm") or {}
        fingerprint = saved.get("fingerprint")
        if fingerprint and fingerprint != self.model.config.llm.fingerprint:
            raise ModelConfigError(
                f"the checkpoint was trained on another LLM than {self.model.config.llm.name_or_path!r} (its "
                "input embeddings differ); load the same LLM"
            )
        state = checkpoint["state_dict"]
        own = self.state_dict()
        for key in self._frozen_llm_keys():
            if key not in state:
                state[key] = own[key]


def _plain(config: Any) -> Any:
    """A config dataclass as a plain dict (lists for tuples); a dict or ``None`` as it is."""
    if config is None or isinstance(config, Mapping):
        return None if config is None else dict(config)
    return json.loads(json.dumps(asdict(config)))


def _config(cls: Any, value: Mapping[str, Any] | None) -> Any:
    """Rebuild config dataclass ``cls`` from its plain dict (unknown keys are an error)."""
    if value is None:
        return None
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ModelConfigError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**dict(value))


def _kind(sensor: str) -> str:
    from spectravlm.sensors import get_sensor

    return get_sensor(sensor).kind


def _checkpoint_predictor(path: Path, expert: ExpertConfig) -> nn.Module:
    """A regression task of a spectravlm checkpoint as an expert's predictor (its target units checked)."""
    import importlib

    from spectravlm.encoders.pretrained import read_checkpoint

    ckpt = read_checkpoint(path)
    meta = ckpt.get("spectravlm") or {}
    name = meta.get("task")
    tasks = importlib.import_module("spectravlm.tasks")
    cls = getattr(tasks, str(name), None)
    if cls is None or not hasattr(cls, "load_from_checkpoint"):
        raise ModelConfigError(f"{path}: a {name!r} checkpoint; expected a spectravlm regression task's")
    units = (meta.get("target") or {}).get("units")
    if units and not same_units(expert.units, str(units)):
        raise UnknownUnitError(
            f"expert {expert.name!r} is declared in {expert.units!r}, but its model {path} predicts "
            f"{(meta.get('target') or {}).get('name', 'its target')} in {units!r}"
        )
    module = cls.load_from_checkpoint(str(path), map_location="cpu")
    if "init_encoder" in module.hparams:
        module.hparams["init_encoder"] = None  # the weights travel with the expert, not the pretraining file
    return module


__all__ = ["FIT", "VLMTask"]
