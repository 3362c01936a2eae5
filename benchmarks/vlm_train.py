"""Training SpectraVLM with numbers from regression heads: AGB answer error of five ways to state a number.

On held-out windows (the test blocks of the same spatial-block split as regression) of two stores, the
SYNTHETIC demo store (256 px, seed 0) and the real BioMassters chip 0060c0a5 (256 px, ``../shared/data``),
questions "what is the mean above-ground biomass in <region>?" (the whole 32 px window, a quarter or its
centre) are answered by:

  (a) ``gate``   xVal numbers through the number gate over the LLM's number head, the AGB head (averaged over
                 the asked region) and the scene statistics (routing term on);
  (b) ``xval``   xVal numbers from the LLM's number head alone (no gate);
  (c) ``digits`` numbers written digit by digit by the LLM (``digits`` mode);
  (d) ``none``   numbers in the LLM's own tokenizer (``none`` mode);
  (e) ``head``   the AGB head queried directly: its map averaged over the region (no language model);

and ``gate_mix`` = (a) without the routing term (the number loss on the mixed value alone), to measure what
the routing term does. (a)-(d) train with the same budget: the same tiny LLM (pretrained here on the text of
the training records, ``spectravlm.vlm.tiny``), bridge, encoder (a new ``test`` encoder, trained), LoRA on
every linear layer of the LLM, steps, batch, learning rate and seed; the training records are every question
type of ``spectravlm data qa`` about the training windows. The AGB head is the library's
``LinearDenseRegressor`` fit in closed form on the training windows (the same head is the gate's expert and
(e)). RMSE (t/ha) is over the held-out AGB-mean questions; an answer without a number is *missing* (counted,
not in the RMSE). Floors (issue 16): (a) <= 1.1 x (e) and (a) <= 0.5 x min((c), (d)).

Run from the project root:  flock /tmp/spectravlm-bench.lock python benchmarks/vlm_train.py [--steps 800]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
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
from spectravlm.vlm import ExpertConfig, LoraSettings, NumericConfig, QFormerBridgeConfig

ROOT = Path(__file__).resolve().parents[1]
CHIP = ROOT.parent / "shared" / "data" / "biomassters" / "0060c0a5"
BRIDGE = QFormerBridgeConfig(
    num_query_tokens=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
    cross_attention_frequency=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip
LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPLIT = (0.625, 0.125, 0.25)  # 16 blocks of 64 px: 10 train, 2 val, 4 test (16 held-out windows of 32 px)
VARIANTS = ("gate", "gate_mix", "xval", "digits", "none")


def stores(work: Path) -> dict[str, Path]:
    out = {"demo": work / "demo.zarr"}
    write_demo_store(out["demo"], size=256, seed=0)
    if CHIP.is_dir():
        from spectravlm.data.ingest import ingest_biomassters
        from spectravlm.data.stats import compute_stats

        out["biomassters"] = work / "biomassters.zarr"
        ingest_biomassters(CHIP, out["biomassters"])
        compute_stats(out["biomassters"])
    else:
        print(f"the BioMassters chip is not at {CHIP}: demo store only", file=sys.stderr)
    return out


def make_task(variant: str, llm: Path, out: Path, steps: int, lr: float) -> VLMTask:
    mode = {"digits": "digits", "none": "none"}.get(variant, "xval")
    gate = variant in ("gate", "gate_mix")
    experts = [ExpertConfig("agb_mean", "head", "agb", "t/ha", reduce="mean", source="fit")] if gate else None
    torch.manual_seed(0)
    return VLMTask(
        llm=str(llm), encoder="test", patch_size=8, bridge=BRIDGE, numeric=NumericConfig(mode=mode),  # type: ignore[arg-type]
        lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=LORA), gate=gate, experts=experts,
        scene_statistics=gate, route_weight=1.0 if variant == "gate" else 0.0, stage1_steps=steps // 5,
        freeze_encoder=False, lr=lr, max_new_tokens=24, output_dir=str(out), seed=0,
    )  # fmt: skip


def evaluate(task: VLMTask, qa: Path, head: Any = None) -> dict[str, Any]:
    """RMSE and missing answers over the held-out AGB-mean records (``head``: query the AGB head directly)."""
    dm = QADataModule(str(qa), batch_size=16, types=["agb_mean"])
    dm.setup("test")
    dm.attach(task.model.processor, task.model.config.prompt_template)
    errors, missing, routed = [], 0, []
    task.model.eval()
    with torch.no_grad():
        for batch in dm.test_dataloader():
            if head is not None:
                values = head(batch.scenes, batch.regions).values.tolist()
                numbers = [[v] for v in values]
                sources: list[list[Any]] = [[] for _ in values]
            else:
                gen = task.answer(batch)
                numbers, sources = gen.numbers, gen.sources or [[] for _ in gen.numbers]
            for record, got, src in zip(batch.records, numbers, sources, strict=True):
                if not got or not math.isfinite(got[0]):
                    missing += 1
                    continue
                errors.append(got[0] - record.answer["value"])
                if src:
                    routed.append(src[0].weights.get("agb_mean", 0.0))
    n = len(errors)
    return {
        "rmse": math.sqrt(sum(e * e for e in errors) / n) if n else math.nan,
        "mae": sum(abs(e) for e in errors) / n if n else math.nan,
        "answered": n,
        "missing": missing,
        "agb_mean_weight": sum(routed) / len(routed) if routed else None,
    }


def run(name: str, store: Path, work: Path, steps: int, lr: float, variants: list[str]) -> dict[str, Any]:
    from spectravlm.vlm.tiny import build_tiny_llm

    train_qa, eval_qa = work / f"{name}_qa.jsonl", work / f"{name}_eval.jsonl"
    generate_qa([store], train_qa, window_size=32, per_window=8, block_size=64, split_fractions=SPLIT, seed=0)
    generate_qa(
        [store], eval_qa, window_size=32, per_window=12, types=["agb_mean"], block_size=64,
        split_fractions=SPLIT, seed=1,
    )  # fmt: skip
    records = read_qa(train_qa)
    texts = ["".join(render(r)).replace("<image> ", "") for r in records if r.split == "train"]
    llm = work / f"{name}_llm"
    t0 = time.perf_counter()
    facts = build_tiny_llm(llm, texts, hidden_size=64, steps=400, seed=0)
    result: dict[str, Any] = {
        "store": str(store),
        "records": {s: sum(r.split == s for r in records) for s in ("train", "val", "test")},
        "eval_questions": sum(r.split == "test" for r in read_qa(eval_qa)), "llm": facts,
        "llm_seconds": time.perf_counter() - t0, "variants": {},
    }  # fmt: skip
    for variant in variants:
        task = make_task(variant, llm, work / f"{name}_{variant}", steps, lr)
        trainer = L.Trainer(
            max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, limit_val_batches=0,
            enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer.fit(task, datamodule=QADataModule(str(train_qa), batch_size=8, seed=0))
        seconds = time.perf_counter() - t0
        result["variants"][variant] = evaluate(task, eval_qa) | {"fit_seconds": seconds}
        print(name, variant, result["variants"][variant], flush=True)
        if variant == "gate":
            head = task.model.experts_by_name["agb_mean"]
            result["variants"]["head"] = evaluate(task, eval_qa, head=head)
            print(name, "head", result["variants"]["head"], flush=True)
    v = result["variants"]
    if {"gate", "head", "digits", "none"} <= set(v):
        result["floors"] = {
            "gate / head": v["gate"]["rmse"] / v["head"]["rmse"],
            "gate / min(digits, none)": v["gate"]["rmse"] / min(v["digits"]["rmse"], v["none"]["rmse"]),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--stores", default="demo,biomassters")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    results = {"steps": args.steps, "lr": args.lr, "threads": args.threads, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, store in stores(work).items():
            if name in args.stores.split(","):
                results["datasets"][name] = run(
                    name, store, work, args.steps, args.lr, args.variants.split(",")
                )
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
