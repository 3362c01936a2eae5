"""VLMTask: a seeded short CPU run on the demo store, the gate's routing, stages, saving, bad input.

One module fixture trains once (a tiny LLM pretrained on the QA text, then the VLM for a few hundred steps on
one thread); the tests read what it measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from spectravlm.cli import main
from spectravlm.data.instructions import QADataModule, render
from spectravlm.data.qa import generate_qa, read_qa
from spectravlm.errors import UnknownUnitError
from spectravlm.tasks.vlm import VLMTask
from spectravlm.vlm import ExpertConfig, LoraSettings, QFormerBridgeConfig, SpectraVLM
from spectravlm.vlm.tiny import build_tiny_llm

TYPES = ["agb_mean", "valid_dates", "cloud_share", "backscatter_level"]
BRIDGE = QFormerBridgeConfig(
    num_query_tokens=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
    cross_attention_frequency=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip
AGB = ExpertConfig("agb_mean", "head", "agb", "t/ha", reduce="mean", source="fit")


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_the_module() -> Iterator[None]:
    """One torch thread for the module fixtures too (they run before the per-test one_thread fixture)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def qa(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vlm_task") / "qa.jsonl"
    generate_qa(
        [demo_store], out, window_size=32, per_window=16, types=TYPES, block_size=64,
        split_fractions=(0.5, 0.25, 0.25), seed=0,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def llm(qa: Path) -> Path:
    folder = qa.parent / "llm"
    texts = ["".join(render(r)).replace("<image> ", "") for r in read_qa(qa) if r.split == "train"]
    torch.manual_seed(0)
    build_tiny_llm(folder, texts, vocab_size=400, hidden_size=32, steps=100, batch_size=16, lr=1e-2)
    return folder


def make_task(llm: Path, out: Path | None = None, **kw: Any) -> VLMTask:
    args: dict[str, Any] = dict(
        llm=str(llm), encoder="test", patch_size=8, bridge=BRIDGE, freeze_encoder=True,
        lora=LoraSettings(r=8, alpha=16, dropout=0.0), experts=[AGB], stage1_steps=30, route_weight=1.0,
        lr=5e-3, max_new_tokens=20, output_dir=None if out is None else str(out),
    )  # fmt: skip
    torch.manual_seed(0)
    return VLMTask(**(args | kw))


@dataclass
class Trained:
    task: VLMTask
    dm: QADataModule
    out: Path
    checkpoint: Path
    loss_before: float
    loss_after: float
    agb_before: float  # RMSE (t/ha) of the value the model states at the answer's number, teacher-forced
    agb_after: float
    agb_generated: float  # RMSE (t/ha) of the first number of the generated answers
    agb_expert: float  # RMSE (t/ha) of the agb_mean expert queried directly on the same records
    routing: dict[str, dict[str, float]] = field(default_factory=dict)


def _evaluate(task: VLMTask, dm: QADataModule) -> tuple[float, float]:
    """Mean loss and the teacher-forced AGB RMSE over the test records."""
    losses, errors = [], []
    task.model.eval()
    with torch.no_grad():
        for batch in dm.test_dataloader():
            out = task(batch)
            losses.append(float(out.loss))
            inputs = batch.inputs
            targets = inputs.labels[:, 1:].ne(-100) & inputs.number_mask[:, 1:]
            stated = out.number_values[:, :-1]
            for k, record in enumerate(batch.records):
                if record.type == "agb_mean":
                    value = stated[k][targets[k]][0]
                    errors.append((float(value) - record.answer["value"]) ** 2)
    return sum(losses) / len(losses), math.sqrt(sum(errors) / len(errors))


@pytest.fixture(scope="module")
def trained(qa: Path, llm: Path) -> Trained:
    out = qa.parent / "model"
    task = make_task(llm, out)
    dm = QADataModule(str(qa), batch_size=8)
    dm.setup("fit")
    dm.attach(task.model.processor, task.model.config.prompt_template)
    loss_before, agb_before = _evaluate(task, dm)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=qa.parent / "checkpoints", save_last=True)
    trainer = L.Trainer(
        max_steps=150, accelerator="cpu", logger=False, callbacks=[ckpt], enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0,
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    loss_after, agb_after = _evaluate(task, dm)
    errors: list[float] = []
    direct: list[float] = []
    routing: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    expert = task.model.experts_by_name["agb_mean"]
    for batch in dm.test_dataloader():
        gen = task.answer(batch)
        with torch.no_grad():
            by_expert = expert(batch.scenes, batch.regions).values.tolist()
        for k, record in enumerate(batch.records):
            if record.type == "agb_mean":
                direct.append((by_expert[k] - record.answer["value"]) ** 2)
            if record.type == "agb_mean" and gen.numbers[k]:
                errors.append((gen.numbers[k][0] - record.answer["value"]) ** 2)
            if gen.sources[k]:
                row = routing.setdefault(record.type, {})
                for name, weight in gen.sources[k][0].weights.items():
                    row[name] = row.get(name, 0.0) + weight
                counts[record.type] = counts.get(record.type, 0) + 1
    routing = {t: {s: w / counts[t] for s, w in row.items()} for t, row in routing.items()}
    generated = math.sqrt(sum(errors) / len(errors)) if errors else math.inf
    expert_rmse = math.sqrt(sum(direct) / len(direct))
    print(f"\ntest loss {loss_before:.3f} -> {loss_after:.3f}; AGB RMSE (teacher-forced) {agb_before:.1f} -> "
          f"{agb_after:.1f} t/ha; generated AGB answers RMSE {generated:.1f} t/ha over {len(errors)} "
          f"(of {len(direct)}); the agb_mean expert alone {expert_rmse:.1f} t/ha")  # fmt: skip
    for t, row in routing.items():
        print(t, {s: round(w, 3) for s, w in row.items() if w >= 0.01})
    return Trained(
        task,
        dm,
        out,
        Path(ckpt.last_model_path),
        loss_before,
        loss_after,
        agb_before,
        agb_after,
        generated,
        expert_rmse,
        routing,
    )


def test_short_run_lowers_the_loss_and_the_agb_error(trained: Trained) -> None:
    assert trained.loss_after < 0.5 * trained.loss_before
    assert trained.agb_after < 0.5 * trained.agb_before
    assert trained.agb_generated < 0.5 * trained.agb_before  # the generated answers state the number too
    assert trained.agb_generated <= 1.1 * trained.agb_expert  # as good as the regression head asked directly


def test_stated_numbers_are_the_experts_values_not_the_llms(trained: Trained) -> None:
    """Every number the gate gives to an expert is that expert's value for the question's region, as written.

    The experts are queried here directly (outside the gate); scene statistics must also equal the answer the
    generator computed from the store (the count of valid dates exactly, the cloud share to its rounding).
    """
    from spectravlm.numeric.parsing import format_number

    model, checked, by_type = trained.task.model, 0, {}
    for batch in trained.dm.test_dataloader():
        gen = trained.task.answer(batch)
        with torch.no_grad():
            direct = {e.name: e(batch.scenes, batch.regions) for e in model.experts}
        for k, record in enumerate(batch.records):
            assert len(gen.sources[k]) == len(gen.numbers[k])
            for number, source in zip(gen.numbers[k], gen.sources[k], strict=True):
                assert number == source.value and abs(sum(source.weights.values()) - 1) < 1e-5
                assert source.weights[source.source] == max(source.weights.values())
                if source.source == "lm":
                    continue
                expert = direct[source.source]
                assert bool(expert.available[k])
                assert source.value == pytest.approx(float(expert.values[k]), rel=1e-6, abs=1e-6)
                assert format_number(source.value) in gen.texts[k]  # the text writes the expert's value
                assert source.units == model.experts_by_name[source.source].units
                checked += 1
            first = gen.sources[k][0] if gen.sources[k] else None
            if first is None or first.source == "lm":
                continue
            if record.type == "cloud_share":  # one expert answers it: the stated share is the store's
                assert first.source == "cloud_share"
                assert first.value == pytest.approx(record.answer["value"], abs=0.05)
            elif record.type == "valid_dates":  # a count from a date-count expert: a whole number
                assert first.source in ("optical_dates", "sar_dates") and first.value == round(first.value)
            by_type[record.type] = by_type.get(record.type, 0) + 1
    assert checked >= 20 and by_type.get("valid_dates", 0) >= 3 and by_type.get("cloud_share", 0) >= 3


def test_gate_sends_agb_to_the_agb_head_and_counts_elsewhere(trained: Trained) -> None:
    agb, counts = trained.routing["agb_mean"], trained.routing["valid_dates"]
    assert max(agb, key=agb.__getitem__) == "agb_mean" and agb["agb_mean"] > 0.5
    assert counts["agb_mean"] < 0.1 and max(counts, key=counts.__getitem__) in ("optical_dates", "sar_dates")
    clouds = trained.routing["cloud_share"]
    assert max(clouds, key=clouds.__getitem__) == "cloud_share"


def test_saved_model_answers_identically_and_ask_prints_sources(
    trained: Trained, demo_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (trained.out / "experts" / "agb_mean.safetensors").is_file()
    loaded = SpectraVLM.from_pretrained(trained.out)
    assert (
        loaded.config.window_size == 32
        and loaded.config.prompt_template == trained.task.hparams.prompt_template
    )
    batch = next(iter(trained.dm.test_dataloader()))
    before, after = (
        trained.task.answer(batch),
        loaded.generate(batch.scenes, batch.prompts, regions=batch.regions, max_new_tokens=20),
    )
    assert after.texts == before.texts and after.numbers == before.numbers
    record = next(r for r in read_qa(trained.dm.qa) if r.type == "agb_mean" and r.split == "test")
    bbox = ",".join(str(v) for v in record.bbox)
    argv = ["ask", str(demo_store), record.question.removeprefix("<image> "), "--model", str(trained.out)]
    assert main([*argv, "--bbox", bbox, "--max-new-tokens", "20"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any(" t/ha <- agb_mean (weight " in line for line in printed[1:]), printed


def test_checkpoint_leaves_out_the_frozen_llm_and_loads_back(trained: Trained) -> None:
    state = torch.load(trained.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    llm_keys = [k for k in trained.task.state_dict() if k.startswith("model.llm.")]
    kept = [k for k in llm_keys if k in state]
    assert kept and all("lora_" in k for k in kept) and len(kept) < len(llm_keys)
    loaded = VLMTask.load_from_checkpoint(trained.checkpoint, map_location="cpu")
    mine, theirs = trained.task.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_stage_one_trains_the_bridge_only(llm: Path) -> None:
    task = make_task(llm)
    stage2 = {id(p) for p in task.stage2_parameters()}
    assert task.stage == 1 and stage2
    assert not any(p.requires_grad for p in task.stage2_parameters())
    assert all(p.requires_grad for p in task.model.bridge.parameters())
    assert not any(p.requires_grad for n, p in task.model.llm.named_parameters() if "lora_" not in n)
    grouped = {id(p) for g in task.parameter_groups() for p in g["params"]}
    assert stage2 <= grouped and task.stage == 1  # the optimiser holds stage 2's parameters from the start
    task._set_stage(2)
    assert all(p.requires_grad for p in task.stage2_parameters())


def test_expert_units_must_match_the_questions(qa: Path, llm: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    wrong = ExpertConfig("agb_mean", "head", "agb", "%", reduce="mean", source="fit")
    task = make_task(llm, out, experts=[wrong])
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False)
    with pytest.raises(
        UnknownUnitError, match="expert 'agb_mean' states values in '%', but agb_mean questions ask"
    ):
        trainer.fit(task, datamodule=QADataModule(str(qa)))
    assert not out.exists()
    same = ExpertConfig("agb_mean", "head", "agb", "Mg/ha", reduce="mean", source="fit")
    make_task(llm, experts=[same]).check_units({"agb_mean"})  # t/ha and Mg/ha are one unit


CONFIG = Path(__file__).resolve().parents[2] / "configs" / "vlm_demo.yaml"


def _parse(args: list[str]) -> Any:
    """LightningCLI over BaseTask and any data module (data in subclass mode), without running."""
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from spectravlm.tasks.base import BaseTask

    class Cli(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--run_dir", type=str | None, default=None)

    return Cli(
        BaseTask, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
        run=False, auto_configure_optimizers=False,
    )  # fmt: skip


def test_demo_config_builds_the_task_and_the_data(llm: Path, qa: Path) -> None:
    cli = _parse(["--config", str(CONFIG), f"--model.init_args.llm={llm}", f"--data.init_args.qa={qa}"])
    assert isinstance(cli.model, VLMTask) and isinstance(cli.datamodule, QADataModule)
    assert [e.name for e in cli.model.model.experts][:2] == ["agb_mean", "agb_max"]
    assert cli.model.model.config.llm.lora is not None and cli.model.hparams.stage1_steps == 160


def test_demo_config_fits_with_spectravlm_fit(llm: Path, qa: Path, tmp_path: Path) -> None:
    from spectravlm.cli.train import lightning_cli

    args = [
        "fit", "--config", str(CONFIG), f"--model.init_args.llm={llm}", f"--data.init_args.qa={qa}",
        f"--run_dir={tmp_path / 'run'}", f"--model.init_args.output_dir={tmp_path / 'model'}",
        "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
        "--model.init_args.stage1_steps=1", "--model.init_args.max_new_tokens=4",
    ]  # fmt: skip
    cli = lightning_cli(args[1:], run=False)
    assert isinstance(cli.datamodule, QADataModule) and cli.model.hparams.stage1_steps == 1
    assert main(args) == 0
    assert (tmp_path / "model" / "spectravlm.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    loaded = SpectraVLM.from_pretrained(tmp_path / "model")
    assert [e.name for e in loaded.experts][:2] == ["agb_mean", "agb_max"] and loaded.config.window_size == 32


def test_fit_refuses_an_expert_in_other_units_in_one_line(
    llm: Path, qa: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "percent.yaml"
    wrong.write_text(
        "model:\n  init_args:\n    experts:\n"
        "      - {name: agb_mean, kind: head, quantity: agb, units: '%', reduce: mean, source: fit}\n"
    )
    args = [
        "fit", "--config", str(CONFIG), "--config", str(wrong), f"--model.init_args.llm={llm}",
        f"--data.init_args.qa={qa}", f"--run_dir={tmp_path / 'run'}",
        f"--model.init_args.output_dir={tmp_path / 'model'}", "--trainer.max_steps=1",
    ]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "spectravlm: error: expert 'agb_mean' states values in '%', but agb_mean questions"
    )
    assert not (tmp_path / "model").exists() and not (tmp_path / "run" / "checkpoints").exists()
