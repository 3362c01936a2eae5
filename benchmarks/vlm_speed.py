"""Cost of a SpectraVLM training step beside a plain language-model step of the same LLM (peer and ceiling).

The same tiny Llama-family LLM (``spectravlm.vlm.tiny``, pretrained here on the records' text), the same LoRA
(r 8 on every linear layer), AdamW, batch of 8 records of ``spectravlm data qa`` on the SYNTHETIC demo store
(128 px, 32 px windows), one thread:

  lm_step      the LLM alone: forward, backward, AdamW step on the records' text (prompt + answer, numbers as
               the LLM's own tokens, loss on the answer), batches tokenized beforehand: the ceiling, what the
               language part of a VLM step costs at least;
  hf_trainer   the same as ``lm_step`` through ``transformers.Trainer`` (its loop, collation, scheduler): the
               peer a user would reach for to fine-tune the LLM;
  vlm_step     ``VLMTask`` in stage 2 (LoRA, number modules, gate), scenes read beforehand: encoder (trained),
               Q-Former, the LLM with the scene's query tokens in the prompt, the number gate over the experts
               (the AGB head and the scene statistics evaluated on each scene), forward, backward, AdamW;
  vlm_fit      ``Trainer.fit`` of the same task (Lightning loop, reading every scene from the store,
               tokenizing).

Per-step times are medians over timed steps after warm-up steps. Ratios: vlm_step / lm_step (what the scene,
the bridge and the gate add to the language step), vlm_fit / hf_trainer (the two complete loops).

Run from the project root:  flock /tmp/spectravlm-bench.lock python benchmarks/vlm_speed.py [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from spectravlm.data.demo import write_demo_store
from spectravlm.data.instructions import QADataModule, render
from spectravlm.data.qa import generate_qa, read_qa
from spectravlm.tasks.vlm import VLMTask
from spectravlm.vlm import ExpertConfig, LoraSettings, QFormerBridgeConfig
from spectravlm.vlm.tiny import build_tiny_llm

BRIDGE = QFormerBridgeConfig(
    num_query_tokens=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
    cross_attention_frequency=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip
LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BATCH = 8


def _timed(step: Any, batches: list[Any], warmup: int, steps: int) -> float:
    """Median seconds of ``step(batch)`` over ``steps`` calls after ``warmup`` calls."""
    times = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        step(batches[k % len(batches)])
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def lm_rows(llm: Path, texts: list[tuple[str, str]]) -> tuple[list[dict[str, list[int]]], int]:
    """The records' prompt + answer in the LLM's own tokenizer, loss on the answer tokens; and the pad id."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llm)
    rows = []
    for prompt, answer in texts:
        p, a = tok(prompt)["input_ids"], tok(answer)["input_ids"] + [tok.eos_token_id]
        rows.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return rows, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def collate(rows: list[dict[str, list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """Right padding (attention mask 0, label -100 on the padding)."""
    n = max(len(r["input_ids"]) for r in rows)
    return {
        "input_ids": torch.tensor([r["input_ids"] + [pad] * (n - len(r["input_ids"])) for r in rows]),
        "attention_mask": torch.tensor(
            [[1] * len(r["input_ids"]) + [0] * (n - len(r["input_ids"])) for r in rows]
        ),
        "labels": torch.tensor([r["labels"] + [-100] * (n - len(r["labels"])) for r in rows]),
    }


def lora_llm(llm: Path) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(llm)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(LORA))
    return get_peft_model(model, config)


def measure_lm(
    llm: Path, batches: list[dict[str, torch.Tensor]], warmup: int, steps: int, lr: float
) -> float:
    model = lora_llm(llm).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(batch: dict[str, torch.Tensor]) -> None:
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _timed(step, batches, warmup, steps)


def measure_hf_trainer(
    llm: Path, rows: list[dict[str, list[int]]], pad: int, steps: int, lr: float, work: Path
) -> float:
    """Seconds per step of ``transformers.Trainer``: (run of 2 + ``steps`` steps - run of 2) / ``steps``."""
    from transformers import Trainer, TrainingArguments

    runtimes = []
    for n in (2, steps + 2):  # the first run warms up; per step = the difference / steps
        args = TrainingArguments(
            output_dir=str(work / "hf"), max_steps=n, per_device_train_batch_size=BATCH, learning_rate=lr,
            use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
            disable_tqdm=True, seed=0, lr_scheduler_type="cosine", warmup_steps=0,
        )  # fmt: skip
        trainer = Trainer(
            model=lora_llm(llm), args=args, train_dataset=rows, data_collator=lambda r: collate(r, pad)
        )
        t0 = time.perf_counter()
        trainer.train()
        runtimes.append(time.perf_counter() - t0)
    return (runtimes[1] - runtimes[0]) / steps


def make_task(llm: Path, lr: float) -> VLMTask:
    torch.manual_seed(0)
    return VLMTask(
        llm=str(llm), encoder="test", patch_size=8, bridge=BRIDGE, freeze_encoder=False,
        lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=LORA),
        experts=[ExpertConfig("agb_mean", "head", "agb", "t/ha", reduce="mean", source="fit")],
        stage1_steps=0, lr=lr, seed=0,
    )  # fmt: skip


def measure_vlm(llm: Path, qa: Path, warmup: int, steps: int, lr: float) -> tuple[float, float]:
    task = make_task(llm, lr)
    dm = QADataModule(str(qa), batch_size=BATCH, seed=0)
    dm.attach(task.model.processor, task.model.config.prompt_template, targets=["agb"])
    dm.setup("fit")
    task.fit_experts(dm)
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == warmup + steps:
            break
    task.train()
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=lr)

    def step(batch: Any) -> None:
        task(batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    per_step = _timed(step, batches, warmup, steps)
    fits = []
    for n in (warmup, warmup + steps):  # per step = the difference / steps (the setup cancels)
        trainer = L.Trainer(
            max_steps=n, accelerator="cpu", logger=False, enable_checkpointing=False, limit_val_batches=0,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        task = make_task(llm, lr)
        t0 = time.perf_counter()
        trainer.fit(task, datamodule=QADataModule(str(qa), batch_size=BATCH, seed=0))
        fits.append(time.perf_counter() - t0)
    return per_step, (fits[1] - fits[0]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "demo.zarr"
        write_demo_store(store, size=128, seed=0)
        qa = work / "qa.jsonl"
        generate_qa(
            [store], qa, window_size=32, per_window=16, block_size=64, split_fractions=(0.5, 0.25, 0.25)
        )
        records = [r for r in read_qa(qa) if r.split == "train"]
        texts = [render(r) for r in records]
        llm = work / "llm"
        build_tiny_llm(llm, ["".join(t).replace("<image> ", "") for t in texts], hidden_size=64, steps=50)
        plain = [(p.replace("<image> ", ""), a) for p, a in texts]
        rows, pad = lm_rows(llm, plain)
        batches = [collate(rows[i : i + BATCH], pad) for i in range(0, len(rows) - BATCH + 1, BATCH)]
        lm = measure_lm(llm, batches, args.warmup, args.steps, args.lr)
        hf = measure_hf_trainer(llm, rows, pad, args.steps, args.lr, work)
        vlm, fit = measure_vlm(llm, qa, args.warmup, args.steps, args.lr)
    results = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        "batch": BATCH, "timed_steps": args.steps, "train_records": len(records),
        "ms_per_step": {"lm_step": 1e3 * lm, "hf_trainer": 1e3 * hf, "vlm_step": 1e3 * vlm,
                        "vlm_fit": 1e3 * fit},
        "ratios": {"vlm_step / lm_step": vlm / lm, "vlm_fit / hf_trainer": fit / hf,
                   "hf_trainer / lm_step": hf / lm},
    }  # fmt: skip
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
