"""SpectraVLM on CPU: generation against the bare LLM at the same prompt length, and the bridge per scene.

Models (random weights: speed does not depend on them):

* LLMs, Llama-style, built from their configs, saved to a temporary folder and loaded with
  ``AutoModelForCausalLM.from_pretrained`` as users load hub models: ``smol``, shaped as SmolLM2-135M
  (hidden 576, 30 layers, 9 heads / 3 KV heads, MLP 1536, vocabulary 49152, 135 M parameters), and
  ``tiny`` (hidden 256, 6 layers, 4 heads, MLP 768, vocabulary 32000, 13 M parameters), where the VLM's
  per-token work weighs most. Their tokenizer is a byte-level BPE trained here (the LLMs' other
  vocabulary rows are computed by their heads all the same, for the bare LLM and the VLM alike).
* Encoder: ``tiny`` (D=192, 12 blocks), patch 16, on 64 px windows of the demo store (S2 10 bands x 10
  dates + S1 VV/VH x 12 dates = 352 tokens per scene).
* Bridges, 32 queries each: ``blip2``, BLIP-2's Q-Former size (768 wide, 12 layers, cross-attention
  every 2nd layer, 105 M parameters), paired with ``smol``; ``small`` (256 wide, 4 layers), paired with
  ``tiny``.

Part 1, generation (greedy, KV cache, 64 new tokens, EOS suppressed in both so every row makes all of
them; batch 1 and 4): ``bare`` = the LLM's own ``generate`` on a text prompt of the same length as the VLM's
prompt (32 image tokens + text); ``vlm`` = ``SpectraVLM.generate`` on the scene(s) and prompt(s),
end to end (encoder, bridge, prefill, decoding loop, decoding the text); ``vlm text`` = the same call
on the same-length text prompt without a scene (the decoding loop against transformers' ``generate``,
nothing else). tokens/s = new tokens x batch / time, one thread (``--threads``), the three methods taking
turns in each of ``--rounds`` rounds (their order rotating); the ratio to ``bare`` is the median of the
per-round ratios. Two clocks: wall time, and the process's CPU time (``time.process_time``), which other
processes on this shared machine cannot stretch (with one thread it is the compute time).
Peak memory = peak RSS (``VmHWM``) of a fresh process over one generation, and its rise above the RSS
with the model loaded.

Part 2, the bridge per scene: ``encoder.forward_features`` vs ``QFormerBridge`` on its output, batch 1
and 8, inference (no grad).

Run from the project root:  flock /tmp/spectravlm-bench.lock python benchmarks/vlm.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from spectravlm.data.dataset import CubeDataset
from spectravlm.data.demo import write_demo_store
from spectravlm.encoders.spectral import build_encoder
from spectravlm.stack import SensorStack, collate_stacks
from spectravlm.vlm import LLMConfig, NumericConfig, QFormerBridgeConfig, SpectraVLM, SpectraVLMConfig

NEW_TOKENS = 64
PAIRS = {"smol": "blip2", "tiny": "small"}  # LLM -> bridge
QUERIES = 32
TEXT = "Question: what is the mean above-ground biomass of the forest in this scene, in t/ha? Answer:"
BRIDGES = {
    "blip2": QFormerBridgeConfig(num_query_tokens=QUERIES),
    "small": QFormerBridgeConfig(num_query_tokens=QUERIES, hidden_size=256, num_hidden_layers=4,
                                 num_attention_heads=4, intermediate_size=1024),
}  # fmt: skip


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


LLMS = {
    "smol": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3),
    "tiny": dict(vocab_size=32000, hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                 num_attention_heads=4, num_key_value_heads=4),
}  # fmt: skip


def make_llm(folder: Path, size: str) -> None:
    """Save a Llama of ``size`` and a trained byte-level BPE tokenizer into ``folder``."""
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [
        TEXT,
        "The scene shows conifer forest with 152.3 t/ha and a cloud-free summer.",
        "VV -12.5 dB",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = LlamaConfig(
        **LLMS[size], max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id, bos_token_id=hf.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    hf.save_pretrained(folder)


def scenes(store: Path, batch: int) -> SensorStack:
    ds = CubeDataset([str(store)], groups=["s2", "s1"], window_size=64, pool_slots=0)
    return collate_stacks([ds.read_batch([i % len(ds)]) for i in range(batch)])


def make_vlm(llm: Path, bridge: str) -> SpectraVLM:
    torch.manual_seed(0)
    encoder = build_encoder("tiny", patch_size=16)
    config = SpectraVLMConfig(
        encoder=encoder.config, llm=LLMConfig(name_or_path=str(llm)), bridge=BRIDGES[bridge],
        numeric=NumericConfig(mode="xval"),
    )  # fmt: skip
    return SpectraVLM(config, encoder=encoder).eval()


def same_length_ids(model: SpectraVLM, batch: int) -> dict[str, torch.Tensor]:
    """Text ids as long as the VLM's prompt (image tokens + text), for the bare LLM."""
    inputs = model.inputs(["<image> " + TEXT] * batch)
    length = inputs.input_ids.shape[1]
    text = model.tokenizer.tokenizer([TEXT * 4], add_special_tokens=False)["input_ids"][0][:length]
    ids = torch.tensor([text] * batch)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def runners(model: SpectraVLM, store: Path, batch: int) -> dict[str, Any]:
    from transformers import LogitsProcessorList, SuppressTokensLogitsProcessor

    eos = model.processor.eos_token_id
    no_eos = LogitsProcessorList([SuppressTokensLogitsProcessor(suppress_tokens=[eos], device="cpu")])
    scene = scenes(store, batch)
    prompts = ["<image> " + TEXT] * batch
    bare_inputs = same_length_ids(model, batch)
    text_prompt = model.tokenizer.tokenizer.decode(bare_inputs["input_ids"][0])
    llm = model.base_llm

    def bare() -> int:
        out = llm.generate(
            **bare_inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
        )
        return int(out.shape[1] - bare_inputs["input_ids"].shape[1]) * batch

    def vlm() -> int:
        out = model.generate(scene, prompts, max_new_tokens=NEW_TOKENS, logits_processor=no_eos)
        return int(out.sequences.shape[1] - out.prompt_length) * batch

    def vlm_text() -> int:
        out = model.generate(None, [text_prompt] * batch, max_new_tokens=NEW_TOKENS, logits_processor=no_eos)
        return int(out.sequences.shape[1] - out.prompt_length) * batch

    return {"bare": bare, "vlm": vlm, "vlm text": vlm_text}


def child(args: argparse.Namespace) -> None:
    """Peak RSS of one generation by one method, in a fresh process."""
    torch.set_num_threads(args.threads)
    model = make_vlm(args.llm, args.bridge)
    run = runners(model, args.store, args.batch)[args.child]
    before = _rss_mb()
    _reset_peak()
    run()
    peak = _peak_mb()
    print(
        json.dumps(
            {"rss_before_mb": round(before), "peak_rss_mb": round(peak), "rise_mb": round(peak - before)}
        )
    )


def generation_part(store: Path, llms: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for size in args.llms:
        bridge, llm = PAIRS[size], llms[size]
        model = make_vlm(llm, bridge)
        for batch in args.batches:
            fns = runners(model, store, batch)
            key = f"{size} LLM + {bridge} bridge, batch {batch}"
            res[key] = {f"{name} {clock}": [] for name in fns for clock in ("wall", "cpu")}
            res[key]["prompt_length"] = model.inputs(["<image> " + TEXT]).input_ids.shape[1]
            for fn in fns.values():
                fn()  # warm-up
            names = list(fns)
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    n = fns[name]()
                    res[key][f"{name} wall"].append(n / (time.perf_counter() - t0))
                    res[key][f"{name} cpu"].append(n / (time.process_time() - c0))
            for name in fns:
                cmd = [sys.executable, __file__, "--child", name, "--store", str(store), "--llm", str(llm),
                       "--bridge", bridge, "--batch", str(batch), "--threads", str(args.threads)]  # fmt: skip
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                res[key][f"{name} memory"] = json.loads(out.strip().splitlines()[-1])
    return res


def _bridge_times(model: SpectraVLM, scene: SensorStack, rounds: int) -> dict[str, float]:
    """Median CPU seconds per scene of the encoder and of the bridge on the encoder's output."""
    with torch.no_grad():
        out = model.encoder.forward_features(scene)
        fns = {
            "encoder": lambda: model.encoder.forward_features(scene),
            "bridge": lambda: model.bridge(out.tokens, out.mask),
        }
        for fn in fns.values():
            fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                c0 = time.process_time()
                fn()
                times[name].append((time.process_time() - c0) / scene.batch_size)
    return {name: statistics.median(v) for name, v in times.items()} | {"tokens": int(out.tokens.shape[1])}


def bridge_part(store: Path, llms: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for size in args.llms:
        bridge = PAIRS[size]
        model = make_vlm(llms[size], bridge)
        for batch in (1, 8):
            res[f"{bridge} bridge, batch {batch}"] = _bridge_times(
                model, scenes(store, batch), 2 * args.rounds
            )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    # one thread: on this shared 2-core machine (load ~3 from other sessions) the smol LLM made 8.7 tokens/s
    # on one thread and 2.0 on two (threads waiting on each other); ratios are taken at equal threads
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--llms", nargs="+", default=["tiny", "smol"], choices=sorted(LLMS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--llm", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--bridge", default="blip2", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "demo.zarr"
        write_demo_store(store, size=128, seed=0)
        llms = {size: Path(tmp) / size for size in args.llms}
        for size, folder in llms.items():
            make_llm(folder, size)
        gen = generation_part(store, llms, args)
        bridge = bridge_part(store, llms, args)
    print("## generation: tokens/s (median), ratio to bare (median of per-round ratios), peak RSS MB (rise)")
    for key, r in gen.items():
        print(f"{key} (prompt {r['prompt_length']} tokens, {NEW_TOKENS} new):")
        for name in ("bare", "vlm", "vlm text"):
            mem = r[f"{name} memory"]
            cells = []
            for clock in ("cpu", "wall"):
                runs, bare = r[f"{name} {clock}"], r[f"bare {clock}"]
                ratio = statistics.median(a / b for a, b in zip(runs, bare, strict=True))
                cells.append(f"{clock} {statistics.median(runs):7.1f} tok/s x{ratio:4.2f}")
            print(f"  {name:9s} {'   '.join(cells)}   peak {mem['peak_rss_mb']} MB (+{mem['rise_mb']})")
    print("## bridge per scene vs the encoder alone (CPU ms per scene, median)")
    for key, r in bridge.items():
        print(
            f"{key}: encoder {1e3 * r['encoder']:.1f} ms, bridge {1e3 * r['bridge']:.1f} ms "
            f"(x{r['bridge'] / r['encoder']:.2f} of the encoder), {r['tokens']} tokens per scene"
        )
    print(json.dumps({"generation": gen, "bridge": bridge}))


if __name__ == "__main__":
    main()
