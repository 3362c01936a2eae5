"""Numeric tokenizer benchmark, in one run.

(a) Tokens per number and total sequence length of a number-heavy corpus of generated AGB / EO report
    sentences: the wrapped tokenizer alone (``none``) vs ``xval`` vs ``digits``, for three tokenizer
    kinds trained here on general English text (Python standard-library docstrings, ~2.6 MB): GPT-2-style
    byte-level BPE, Llama-3-style byte-level BPE (digits in runs of 1-3), SentencePiece-style Unigram with
    single digits. Also the CPU time of encoding relative to the wrapped tokenizer (median of 6 rounds,
    the tokenizers library's thread pool off: its spinning threads inflate CPU time unevenly).
(b) A tiny causal LM (transformers GPT-2, same config, data, seed and steps for every mode) learns to
    restate a quantity given in its context: "... mean AGB is 152.3 t/ha, canopy height is 21.4 m, VV
    backscatter is -12.5 dB. So the canopy height is ? m". Greedy generation, then the first number in
    the answer is compared with the truth. The loss covers the answer only (as in instruction tuning).
    Reports MSE per quantity, normalised MSE (MSE / variance of
    the quantity; 1.0 = always answering the mean) and how often no number was produced (then the
    training mean is used, so a failure costs about one variance).

Run from the project root:  flock /tmp/spectravlm-bench.lock python benchmarks/numeric.py
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before tokenizers is imported; it reads this once

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from spectravlm.errors import NumericInputError
from spectravlm.numeric import NumericCausalLM, NumericTokenizer, find_numbers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

STDLIB = (
    "os re json argparse collections typing pathlib subprocess email.message http.client unittest logging "
    "asyncio functools itertools datetime decimal fractions statistics random string textwrap shutil tarfile "
    "zipfile csv sqlite3 threading multiprocessing socket ssl urllib.request xml.etree.ElementTree "
    "html.parser calendar time math struct codecs io inspect dataclasses enum contextlib heapq bisect array "
    "queue sched "
    "tempfile glob fnmatch pickle copy pprint difflib locale gettext optparse configparser hashlib hmac "
    "secrets base64 binascii uuid ipaddress wave colorsys pdb profile timeit trace doctest pydoc platform "
    "sysconfig warnings weakref abc numbers operator types ast dis tokenize zlib gzip bz2 lzma mailbox "
    "mimetypes smtplib ftplib imaplib poplib"
).split()

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def general_corpus() -> list[str]:
    """Unique docstrings of ~100 standard-library modules: general technical English, offline."""
    docs: set[str] = set()
    for name in STDLIB:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc:
                docs.add(doc)
    return sorted(docs)


def build_tokenizers(corpus: list[str], vocab_size: int) -> dict[str, PreTrainedTokenizerFast]:
    """Three differently-behaving tokenizers trained on ``corpus`` with the `tokenizers` library."""
    out = {}
    alphabet = pre_tokenizers.ByteLevel.alphabet()

    gpt2 = Tokenizer(models.BPE())
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    gpt2.decoder = decoders.ByteLevel()
    gpt2.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=alphabet,
            show_progress=False,
        ),
    )
    out["gpt2-like BPE"] = PreTrainedTokenizerFast(
        tokenizer_object=gpt2, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )

    llama3 = Tokenizer(models.BPE())
    llama3.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    llama3.decoder = decoders.ByteLevel()
    llama3.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|end_of_text|>"],
            initial_alphabet=alphabet,
            show_progress=False,
        ),
    )
    out["llama3-like BPE (1-3 digits)"] = PreTrainedTokenizerFast(
        tokenizer_object=llama3, eos_token="<|end_of_text|>", pad_token="<|end_of_text|>"
    )

    spm = Tokenizer(models.Unigram())
    spm.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(prepend_scheme="first"), pre_tokenizers.Digits(individual_digits=True)]
    )
    spm.decoder = decoders.Metaspace(prepend_scheme="first")
    spm.train_from_iterator(
        corpus,
        trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=["<pad>", "</s>", "<unk>"],
            unk_token="<unk>",
            initial_alphabet=[chr(c) for c in range(32, 127)] + ["°", "±"],
            show_progress=False,
        ),
    )
    out["spm-like Unigram (single digits)"] = PreTrainedTokenizerFast(
        tokenizer_object=spm, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    return out


# ----------------------------------------------------------------------------------- report sentences
def _date(rng: random.Random) -> str:
    return f"{rng.randint(2016, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def report_sentence(rng: random.Random) -> str:
    """One sentence of a generated AGB / EO report, numbers in the forms reports use."""
    agb = rng.uniform(5, 450)
    templates = [
        lambda: (
            f"Plot {rng.randint(1, 999)} ({rng.uniform(40, 60):.4f}N, {rng.uniform(-10, 30):.4f}E) "
            f"surveyed on {_date(rng)}: mean AGB {agb:.1f} t/ha (SD {rng.uniform(2, 60):.1f}), canopy height "
            f"{rng.uniform(2, 40):.1f} m."
        ),
        lambda: (
            f"Sentinel-1 IW VV backscatter is {rng.uniform(-25, -5):.2f} dB and VH "
            f"{rng.uniform(-32, -12):.2f} dB at {rng.uniform(30, 46):.1f} degrees incidence, "
            f"orbit {rng.randint(1, 175)}."
        ),
        lambda: (
            f"Across {rng.randint(1000, 2_000_000):,} ha the total stock is {rng.uniform(1e4, 9e7):.3g} t, "
            f"or {agb:.0f} t/ha ({agb * 0.8:.0f}-{agb * 1.2:.0f} t/ha at 95% confidence)."
        ),
        lambda: (
            f"S2A and S2B reflectance: B04 {rng.uniform(0.01, 0.2):.4f}, B08 {rng.uniform(0.1, 0.5):.4f}, "
            f"B8A {rng.uniform(0.1, 0.5):.4f}, B11 {rng.uniform(0.05, 0.35):.4f}; "
            f"NDVI {rng.uniform(0.1, 0.9):.2f}."
        ),
        lambda: (
            f"Cloud cover was {rng.randint(0, 100)}% in {rng.randint(1, 40)} of {rng.randint(40, 80)} scenes "
            f"between {_date(rng)} and {_date(rng)}; residual error {rng.uniform(1e-4, 9e-3):.1e}."
        ),
        lambda: (
            f"The model predicts {agb:.1f} t/ha with RMSE {rng.uniform(10, 60):.1f} t/ha and R2 "
            f"{rng.uniform(0.4, 0.9):.2f} on {rng.randint(100, 50_000):,} validation pixels."
        ),
    ]
    return rng.choice(templates)()


def part_a(tokenizers: dict[str, PreTrainedTokenizerFast], sentences: list[str]) -> list[dict[str, object]]:
    n_numbers = sum(len(find_numbers(s)) for s in sentences)
    rows = []
    for name, inner in tokenizers.items():
        row: dict[str, object] = {"tokenizer": name, "numbers": n_numbers}
        # tokens that overlap a number's characters, in the wrapped tokenizer alone
        enc = inner(sentences, add_special_tokens=False, return_offsets_mapping=True)
        per_number = 0
        for s, offsets in zip(sentences, enc["offset_mapping"], strict=True):
            for span in find_numbers(s):
                per_number += sum(1 for a, b in offsets if a < span.end and b > span.start and s[a:b].strip())
        row["none tokens/number"] = per_number / n_numbers
        wrapped = {mode: NumericTokenizer(inner, mode=mode) for mode in ("none", "xval", "digits")}  # type: ignore[arg-type]
        runs: dict[str, list[float]] = {mode: [] for mode in wrapped}
        for _ in range(7):  # modes interleaved, so that load from other processes hits all of them alike
            for mode, tok in wrapped.items():
                gc.collect()
                gc.disable()  # as timeit does: a collection inside one timing made it bimodal (+200 ms)
                start = time.process_time()  # CPU time of this process: robust to other processes' load
                tok(sentences, add_special_tokens=False)
                runs[mode].append(time.process_time() - start)
                gc.enable()
        timings = {mode: statistics.median(r[1:]) for mode, r in runs.items()}  # first round warms up
        for mode, tok in wrapped.items():
            ids = tok(sentences, add_special_tokens=False)["input_ids"]
            row[f"{mode} tokens"] = sum(map(len, ids))
            if mode == "digits":
                digit_ids = set(tok.digit_token_ids.values()) | set(tok.num_token_ids)
                row["digits tokens/number"] = sum(i in digit_ids for seq in ids for i in seq) / n_numbers
        row["xval/none length"] = row["xval tokens"] / row["none tokens"]  # type: ignore[operator]
        row["digits/none length"] = row["digits tokens"] / row["none tokens"]  # type: ignore[operator]
        row["xval encode CPU / none"] = timings["xval"] / timings["none"]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------- part (b)
QUANTITIES = {  # name: (phrase, unit, low, high)
    "agb": ("AGB", "t/ha", 5.0, 400.0),
    "height": ("height", "m", 2.0, 40.0),
    "vv": ("VV", "dB", -25.0, -5.0),
}


@dataclass
class Example:
    prompt: str
    answer: str
    quantity: str
    value: float


def qa_example(rng: random.Random) -> Example:
    values = {q: round(rng.uniform(lo, hi), 1) for q, (_, _, lo, hi) in QUANTITIES.items()}
    order = list(QUANTITIES)
    rng.shuffle(order)
    facts = ", ".join(f"{QUANTITIES[q][0]} is {values[q]:.1f} {QUANTITIES[q][1]}" for q in order)
    asked = rng.choice(order)
    prompt = f"{facts}. So {QUANTITIES[asked][0]} is"
    return Example(prompt, f" {values[asked]:.1f} {QUANTITIES[asked][1]}.", asked, values[asked])


@dataclass
class LMResult:
    mode: str
    mse: dict[str, float]
    nmse: float
    failures: float
    exact: float
    seconds: float
    params: int


def train_and_eval(
    inner: PreTrainedTokenizerFast,
    mode: str,
    train: list[Example],
    test: list[Example],
    args: argparse.Namespace,
) -> LMResult:
    tok = NumericTokenizer(inner, mode=mode)  # type: ignore[arg-type]
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=args.width,
        n_layer=args.layers,
        n_head=4,
        n_positions=128,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = NumericCausalLM.from_tokenizer(GPT2LMHeadModel(config), tok)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    data_rng = random.Random(1)
    start = time.perf_counter()
    model.train()
    for step in range(args.steps):
        examples = data_rng.sample(train, args.batch)
        enc = tok([e.prompt + e.answer for e in examples], padding=True, return_tensors="pt")
        prompt_lengths = [len(ids) for ids in tok([e.prompt for e in examples])["input_ids"]]
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        for row, n in enumerate(prompt_lengths):  # loss on the answer only, as in instruction tuning
            labels[row, :n] = -100
        out = model(
            enc["input_ids"], enc["attention_mask"], enc["numbers"], enc["number_mask"], labels=labels
        )
        assert out.loss is not None
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 200 == 0 or step == args.steps - 1:
            print(f"  {mode} step {step}: loss {out.loss.item():.3f}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start

    model.eval()
    tok.tokenizer.padding_side = "left"
    train_mean = {q: statistics.fmean(e.value for e in train if e.quantity == q) for q in QUANTITIES}
    errors: dict[str, list[float]] = {q: [] for q in QUANTITIES}
    failures = exact = 0
    for i in range(0, len(test), 64):
        chunk = test[i : i + 64]
        enc = tok([e.prompt for e in chunk], padding=True, return_tensors="pt")
        gen = model.generate(
            enc["input_ids"], enc["attention_mask"], enc["numbers"], enc["number_mask"], max_new_tokens=10
        )
        n_prompt = enc["input_ids"].shape[1]
        for row, example in enumerate(chunk):
            try:  # a malformed generation (e.g. a 40-digit string) counts as no answer
                answer = tok.decode(gen.input_ids[row, n_prompt:], gen.numbers[row, n_prompt:])
                found = tok.numbers_in(answer)
            except NumericInputError:
                found = []
            if found:
                predicted = found[0]
                exact += round(predicted, 1) == example.value
            else:
                predicted = train_mean[example.quantity]
                failures += 1
            errors[example.quantity].append((predicted - example.value) ** 2)
    mse = {q: statistics.fmean(v) for q, v in errors.items()}
    variance = {q: (hi - lo) ** 2 / 12 for q, (_, _, lo, hi) in QUANTITIES.items()}
    nmse = statistics.fmean(e / variance[q] for q, v in errors.items() for e in v)
    return LMResult(mode, mse, nmse, failures / len(test), exact / len(test), seconds, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=2000, help="report sentences for part (a)")
    parser.add_argument("--vocab", type=int, default=4000, help="vocabulary of the trained tokenizers")
    parser.add_argument("--lm-vocab", type=int, default=1000, help="vocabulary of the part (b) tokenizer")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per mode in part (b)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--modes", default="none,digits,xval", help="modes of part (b)")
    parser.add_argument("--parts", default="a,b", help="which parts to run")
    parser.add_argument("--test", type=int, default=384, help="test questions in part (b)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads\n")
    if "a" in args.parts.split(","):
        rng = random.Random(0)
        print_part_a(
            build_tokenizers(general_corpus(), args.vocab),
            [report_sentence(rng) for _ in range(args.sentences)],
        )
    if "b" in args.parts.split(","):
        print_part_b(args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


def print_part_a(tokenizers: dict[str, PreTrainedTokenizerFast], sentences: list[str]) -> None:
    print(f"## (a) {len(sentences)} report sentences, example: {sentences[0]!r}\n")
    rows = part_a(tokenizers, sentences)
    print(
        "| tokenizer | tokens/number none | digits | xval | seq. length none | xval/none | digits/none "
        "| xval encode CPU time / none |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tokenizer']} | {r['none tokens/number']:.2f} | {r['digits tokens/number']:.2f} | 1.00 "
            f"| {r['none tokens']} | {r['xval/none length']:.3f} | {r['digits/none length']:.3f} "
            f"| {r['xval encode CPU / none']:.2f} |"
        )


def print_part_b(args: argparse.Namespace) -> None:
    qa_rng = random.Random(1)
    train = [qa_example(qa_rng) for _ in range(20_000)]
    test = [qa_example(random.Random(10_000 + i)) for i in range(args.test)]
    inner = build_tokenizers(general_corpus(), args.lm_vocab)["gpt2-like BPE"]
    print(
        f"\n## (b) tiny GPT-2 (d={args.width}, {args.layers} layers), gpt2-like BPE of {args.lm_vocab} "
        f"tokens, {args.steps} steps x {args.batch}, example: {train[0].prompt + train[0].answer!r}\n"
    )
    results = [train_and_eval(inner, mode, train, test, args) for mode in args.modes.split(",")]
    base = results[0]
    print(
        "| mode | MSE AGB (t/ha)^2 | MSE height m^2 | MSE VV dB^2 | NMSE | NMSE / none | no number | exact "
        "| train s | params |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.mode} | {r.mse['agb']:.1f} | {r.mse['height']:.2f} | {r.mse['vv']:.2f} | {r.nmse:.4f} "
            f"| {r.nmse / base.nmse:.3f} | {r.failures:.1%} | {r.exact:.1%} | {r.seconds:.0f} "
            f"| {r.params:,} |"
        )
    assert all(math.isfinite(r.nmse) for r in results)


if __name__ == "__main__":
    main()
