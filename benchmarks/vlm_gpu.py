"""The prepared GPU check of SpectraVLM: one script, a few minutes on one GPU, its figures in one JSON file.

The model: the ``small`` encoder (ViT-S, patch 16) on synthetic S2 + S1 scenes in the loader's form (64 px,
10 S2 dates of 10 bands as digital numbers x 1e-4, 12 S1 dates of VV/VH in dB, some pixels invalid), a
BLIP-2-sized Q-Former with 32 queries, and a SmolLM2-135M-shaped Llama in **bfloat16** loaded with
``AutoModelForCausalLM.from_pretrained`` from a local folder (random weights; its tokenizer trained here).

What it checks (each part is timed and reported; any failure makes the exit status non-zero):

1. ``dtypes``: on the GPU with a bf16 LLM, the bridge stays float32, logits and number values are float32.
2. ``train_step``: LoRA (family defaults) + gradient checkpointing, a labelled batch of 8 with numbers in
   the answers: loss finite, gradients only in the bridge, the added rows, the number head and the LoRA
   adapters; median step time and ``torch.cuda.max_memory_allocated``.
3. ``numbers``: a generated number token carries the head's value in float32 (1234.5 and 87.6 to 2e-6
   relative: the precision of symlog's float32 inverse) with the bf16 LLM.
4. ``generate``: greedy, 64 new tokens, batch 1 and 8, against the LLM's own ``generate`` on same-length
   text prompts (EOS suppressed in both): tokens/s, ratio, peak memory of each; and the share of prompts
   whose batched (left-padded) greedy answer equals their answer alone (bf16 padded attention may differ by
   rounding, so this is reported, not checked). Sampling with a CUDA generator runs.
5. ``bridge``: CUDA-event milliseconds per scene of the encoder and of the bridge, batch 8.

Run on the device machine (the same wheels as ``benchmarks/gpu.py``; peft is on the device image)::

    python benchmarks/vlm_gpu.py --out $OUT/vlm_gpu.json

On a CPU, ``--dry-run`` runs every part with tiny sizes and no timing claims (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from spectravlm.encoders.spectral import build_encoder, spectral_encoder_test
from spectravlm.numeric import scale_values
from spectravlm.stack import SensorSeries, SensorStack
from spectravlm.vlm import LLMConfig, LoraSettings, QFormerBridgeConfig, SpectraVLM, SpectraVLMConfig

QUESTION = "<image> What is the mean above-ground biomass of the forest in this scene, in t/ha?"
ANSWERS = [
    "It is 152.3 t/ha.",
    "About 87.6 t/ha, cover 85%.",
    "1234.5 t in the window.",
    "No forest: 0 t/ha.",
]


def synthetic_scenes(batch: int, size: int, device: torch.device) -> SensorStack:
    """Scenes in the loader's form: S2 digital numbers (x 1e-4 reflectance) and S1 dB, some pixels invalid."""
    g = torch.Generator().manual_seed(0)
    valid_s2 = torch.rand(batch, 10, size, size, generator=g) > 0.2
    s2 = SensorSeries(
        "sentinel2_l2a",
        ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
        (torch.rand(batch, 10, 10, size, size, generator=g) * 4000).to(torch.int32).to(torch.uint16),
        torch.arange(10).repeat(batch, 1) * 30 + 18900,
        valid_s2,
        units="reflectance",
        scale=1e-4,
        all_valid=False,
        finite=True,
    )
    s1 = SensorSeries(
        "sentinel1_grd",
        ("VV", "VH"),
        torch.rand(batch, 12, 2, size, size, generator=g) * 15 - 25,
        torch.arange(12).repeat(batch, 1) * 30 + 18903,
        torch.ones(batch, 12, size, size, dtype=torch.bool),
        units="dB",
        all_valid=True,
        finite=True,
    )
    return SensorStack({"s2": s2, "s1": s1}).to(device)


def make_llm(folder: Path, dry_run: bool) -> None:
    """A Llama (SmolLM2-135M's shape, or tiny for a dry run) and a byte-level BPE tokenizer, saved."""
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    tok.train_from_iterator([QUESTION, *ANSWERS] * 20, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    sizes = (
        dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)
        if dry_run
        else dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3)
    )  # fmt: skip
    config = LlamaConfig(
        **sizes, max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id, bos_token_id=hf.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    hf.save_pretrained(folder)


def make_vlm(llm: Path, device: torch.device, dry_run: bool, lora: bool = False) -> SpectraVLM:
    torch.manual_seed(0)
    encoder = spectral_encoder_test(patch_size=8) if dry_run else build_encoder("small", patch_size=16)
    bridge = (
        QFormerBridgeConfig(num_query_tokens=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64)
        if dry_run
        else QFormerBridgeConfig(num_query_tokens=32)
    )  # fmt: skip
    dtype = "float32" if device.type == "cpu" else "bfloat16"
    config = SpectraVLMConfig(
        encoder=encoder.config,
        llm=LLMConfig(name_or_path=str(llm), dtype=dtype, lora=LoraSettings(dropout=0.0) if lora else None),
        bridge=bridge,
        gradient_checkpointing=lora,
    )
    return SpectraVLM(config, encoder=encoder).to(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def dtypes(model: SpectraVLM, device: torch.device) -> dict[str, Any]:
    scenes = synthetic_scenes(2, 64 if device.type == "cuda" else 32, device)
    with torch.no_grad():
        out = model(scenes, **model.inputs([QUESTION, QUESTION + " Please."]).model_kwargs())
    result = {
        "bridge": sorted({str(p.dtype) for p in model.bridge.parameters()}),
        "llm": sorted({str(p.dtype) for p in model.base_llm.parameters()}),
        "logits": str(out.logits.dtype),
        "number_values": str(None if out.number_values is None else out.number_values.dtype),
        "finite": bool(torch.isfinite(out.logits).all()),
    }
    assert result["bridge"] == ["torch.float32"] and result["logits"] == "torch.float32", result
    assert result["number_values"] == "torch.float32" and result["finite"], result
    return result


def train_step(llm: Path, device: torch.device, dry_run: bool) -> dict[str, Any]:
    model = make_vlm(llm, device, dry_run, lora=True).train()
    batch = 8
    scenes = synthetic_scenes(batch, 32 if dry_run else 64, device)
    inputs = model.inputs([QUESTION] * batch, [ANSWERS[i % len(ANSWERS)] for i in range(batch)])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        out = model(scenes, **inputs.model_kwargs())
        out.loss.backward()
        grads = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
        llm_grads = {n for n, p in model.named_parameters() if p.grad is not None and n.startswith("llm.")}
        assert grads <= {"bridge", "vocab", "number_head", "llm"}, grads
        assert llm_grads and all("lora_" in n for n in llm_grads)
        opt.step()
        return out.loss.detach()

    step()
    _reset_memory(device)
    times, losses = [], []
    for _ in range(2 if dry_run else 5):
        loss, seconds = _timed(step, device)
        times.append(seconds)
        losses.append(float(loss))
    assert all(x == x and abs(x) < 1e6 for x in losses), losses
    return {"batch": batch, "step_s": statistics.median(times), "losses": losses, "peak_gb": _peak_gb(device)}


def numbers(model: SpectraVLM, device: torch.device) -> dict[str, Any]:
    from transformers import LogitsProcessor, LogitsProcessorList

    class Force(LogitsProcessor):
        def __init__(self, at: int, token: int) -> None:
            self.at, self.token = at, token

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if input_ids.shape[1] == self.at:
                scores = torch.full_like(scores, float("-inf"))  # type: ignore[assignment]
                scores[:, self.token] = 0.0
            return scores

    head = model.number_head
    assert head is not None
    results = {}
    scene = synthetic_scenes(1, 64 if device.type == "cuda" else 32, device)
    for value in (1234.5, 87.6):
        saved = head.mlp[2].bias.detach().clone()
        with torch.no_grad():
            head.mlp[2].weight.mul_(0.0)
            head.mlp[2].bias.fill_(float(scale_values(torch.tensor(value))))
        length = model.inputs([QUESTION]).input_ids.shape[1]
        force = LogitsProcessorList([Force(length, model.tokenizer.num_token_ids[1])])
        out = model.generate(scene, [QUESTION], max_new_tokens=2, logits_processor=force)
        results[str(value)] = out.numbers[0][0]
        # symlog's inverse in float32 is exact to |s| * 2^-24 relative (|s| = 7.1 at 1234.5): 2e-6 covers it
        assert abs(out.numbers[0][0] - value) <= 2e-6 * value, (value, out.numbers)
        with torch.no_grad():
            head.mlp[2].bias.copy_(saved)
    return results


def generate_part(model: SpectraVLM, device: torch.device, dry_run: bool) -> dict[str, Any]:
    from transformers import LogitsProcessorList, SuppressTokensLogitsProcessor

    new = 8 if dry_run else 64
    eos = model.processor.eos_token_id
    no_eos = LogitsProcessorList([SuppressTokensLogitsProcessor(suppress_tokens=[eos], device=str(device))])
    res: dict[str, Any] = {}
    for batch in (1, 8):
        scenes = synthetic_scenes(batch, 32 if dry_run else 64, device)
        prompts = [QUESTION + " Answer briefly." * (i % 3) for i in range(batch)]
        inputs = model.inputs(prompts)
        length = inputs.input_ids.shape[1]
        ids = model.tokenizer.tokenizer([QUESTION[8:] * 8], add_special_tokens=False)["input_ids"][0][:length]
        bare_ids = torch.tensor([ids] * batch, device=device)

        def bare(bare_ids: torch.Tensor = bare_ids) -> Any:
            return model.base_llm.generate(
                input_ids=bare_ids, attention_mask=torch.ones_like(bare_ids), max_new_tokens=new,
                min_new_tokens=new, do_sample=False,
            )  # fmt: skip

        def vlm(scenes: SensorStack = scenes, prompts: list[str] = prompts) -> Any:
            return model.generate(scenes, prompts, max_new_tokens=new, logits_processor=no_eos)

        bare(), vlm()
        row: dict[str, Any] = {"prompt_tokens": length}
        for name, fn in (("bare", bare), ("vlm", vlm)):
            _reset_memory(device)
            runs = [_timed(fn, device)[1] for _ in range(1 if dry_run else 3)]
            row[f"{name}_tok_s"] = new * batch / statistics.median(runs)
            row[f"{name}_peak_gb"] = _peak_gb(device)
        row["vlm_over_bare"] = row["vlm_tok_s"] / row["bare_tok_s"]
        batched = vlm()
        same = 0
        for i, prompt in enumerate(prompts):
            single = SensorStack(
                {
                    g: replace(
                        s, values=s.values[i : i + 1], times=s.times[i : i + 1], valid=s.valid[i : i + 1]
                    )
                    for g, s in scenes.series.items()
                }
            )
            alone = model.generate(single, [prompt], max_new_tokens=new, logits_processor=no_eos)
            same += batched.texts[i] == alone.texts[0]
        row["batched_equals_alone"] = same / batch
        res[f"batch {batch}"] = row
    g = torch.Generator(device=device).manual_seed(0)
    sampled = model.generate(synthetic_scenes(2, 32 if dry_run else 64, device), [QUESTION] * 2,
                             max_new_tokens=4, do_sample=True, top_p=0.9, generator=g)  # fmt: skip
    res["sampling_ok"] = sampled.sequences.shape[1] > sampled.prompt_length
    return res


def bridge_part(model: SpectraVLM, device: torch.device, dry_run: bool) -> dict[str, Any]:
    scenes = synthetic_scenes(8, 32 if dry_run else 64, device)
    with torch.no_grad():
        out = model.encoder.forward_features(scenes)
        fns = {
            "encoder": lambda: model.encoder.forward_features(scenes),
            "bridge": lambda: model.bridge(out.tokens, out.mask),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(2 if dry_run else 10):
            for name, fn in fns.items():
                times[name].append(_timed(fn, device)[1] / 8)
    med = {f"{k}_ms_per_scene": 1e3 * statistics.median(v) for k, v in times.items()}
    return med | {"tokens_per_scene": int(out.tokens.shape[1])}


def main(argv: list[str] | None = None) -> int:
    """Run every part; write the JSON; exit 1 if any part failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="vlm_gpu.json", help="JSON file to write (default vlm_gpu.json)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes (on a CPU: checks the script)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        print("no CUDA device: run with --dry-run to check the script on a CPU", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import transformers

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dry_run": args.dry_run,
    }
    failed = []
    llm = Path(tempfile.mkdtemp(prefix="vlm-gpu-check-")) / "llm"
    make_llm(llm, args.dry_run)
    model = make_vlm(llm, device, args.dry_run)
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "dtypes": lambda: dtypes(model, device),
        "train_step": lambda: train_step(llm, device, args.dry_run),
        "numbers": lambda: numbers(model, device),
        "generate": lambda: generate_part(model, device, args.dry_run),
        "bridge": lambda: bridge_part(model, device, args.dry_run),
    }
    for name, run in parts.items():
        t0 = time.perf_counter()
        try:
            report[name] = run()
        except Exception as err:  # every part reports; the exit status says whether any failed
            report[name] = {
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-3000:],
            }
            failed.append(name)
        report[name]["wall_s"] = time.perf_counter() - t0
        print(f"{name}: {json.dumps(report[name])[:400]}", flush=True)
    report["failed"] = failed
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
