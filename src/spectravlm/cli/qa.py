"""``spectravlm data qa`` (instruction data from stores) and ``spectravlm data tiny-llm`` (a local demo LLM).

::

    spectravlm data qa STORE [STORE ...] OUT.jsonl [--window-size 32] [--per-window 8] [--types agb_mean,...]
        [--groups s2,s1] [--target agb] [--block-size N] [--split 0.8,0.1,0.1] [--seed 0] [--overwrite]
    spectravlm data tiny-llm OUT_DIR --qa QA.jsonl [--steps 300] [--hidden-size 64] [--layers 2] [--overwrite]

``qa`` writes question/answer records about every window of the stores, split by the same spatial blocks as
regression (see :mod:`spectravlm.data.qa` and ``docs/vlm.md``); nothing is written when a store cannot answer
what is asked. ``tiny-llm`` builds a small causal LLM and its tokenizer from the text of a QA file's training
records (:mod:`spectravlm.vlm.tiny`), for configs that train on a CPU.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

COMMANDS = ("qa", "tiny-llm")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectravlm data", description="Instruction data for the VLM.")
    sub = parser.add_subparsers(dest="command", required=True)
    qa = sub.add_parser("qa", help="write question/answer records about the windows of cube stores (JSONL)")
    qa.add_argument("paths", nargs="+", metavar="STORE ... OUT.jsonl", help="stores, then the JSONL to write")
    qa.add_argument("--window-size", type=int, default=32, help="scene window edge in pixels (default 32)")
    qa.add_argument("--per-window", type=int, default=8, help="records per window (default 8)")
    qa.add_argument(
        "--types", type=_csv, default=None, help="question types (default: all the stores answer)"
    )
    qa.add_argument(
        "--groups", type=_csv, default=None, help="sensor groups (default: all of the first store)"
    )
    qa.add_argument("--target", default="agb", help="the AGB target layer (default agb)")
    qa.add_argument(
        "--block-size", type=int, default=None, help="split block edge (default: as the data module)"
    )
    qa.add_argument("--split", type=_csv, default=None, help="train,val,test fractions (default 0.8,0.1,0.1)")
    qa.add_argument("--seed", type=int, default=0, help="seed of the split and the questions (default 0)")
    qa.add_argument("--overwrite", action="store_true", help="replace an existing OUT.jsonl")

    tiny = sub.add_parser("tiny-llm", help="build a tiny local causal LLM + tokenizer from a QA file's text")
    tiny.add_argument("out", help="folder to write (save_pretrained)")
    tiny.add_argument(
        "--qa", required=True, help="a JSONL written by `spectravlm data qa` (training records)"
    )
    tiny.add_argument("--steps", type=int, default=300, help="language-model pretraining steps (default 300)")
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--heads", type=int, default=4)
    tiny.add_argument("--vocab-size", type=int, default=1000)
    tiny.add_argument("--template", default=None, help="prompt template (default: the data module's)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    return parser


def qa_main(argv: Sequence[str]) -> int:
    """Run ``spectravlm data qa|tiny-llm ...``; returns the exit code."""
    args = _parser().parse_args(list(argv))
    from spectravlm.errors import DataConfigError

    if args.command == "qa":
        from spectravlm.data.qa import generate_qa

        if len(args.paths) < 2:
            raise DataConfigError("give at least one store and the JSONL file to write: STORE ... OUT.jsonl")
        fractions = (0.8, 0.1, 0.1)
        if args.split is not None:
            try:
                a, b, c = (float(x) for x in args.split)
            except ValueError as err:
                raise DataConfigError(
                    f"--split {args.split} is not three fractions 'train,val,test'"
                ) from err
            fractions = (a, b, c)
        summary = generate_qa(
            args.paths[:-1], args.paths[-1], window_size=args.window_size, per_window=args.per_window,
            types=args.types, groups=args.groups, target=args.target, block_size=args.block_size,
            split_fractions=fractions, seed=args.seed, overwrite=args.overwrite,
        )  # fmt: skip
        print(
            f"wrote {summary.path}: {sum(summary.records.values())} records "
            f"({', '.join(f'{k} {v}' for k, v in summary.records.items())}) about "
            f"{sum(summary.windows.values())} windows, split by {summary.block_size} px blocks"
        )
        print("types: " + ", ".join(f"{k} {v}" for k, v in summary.types.items()))
        return 0
    from spectravlm.data.instructions import DEFAULT_TEMPLATE, render
    from spectravlm.data.qa import read_qa
    from spectravlm.vlm.tiny import build_tiny_llm

    records = [r for r in read_qa(args.qa) if r.split == "train"]
    if not records:
        raise DataConfigError(f"{args.qa} has no training record")
    template = args.template or DEFAULT_TEMPLATE
    texts = ["".join(render(r, template)).replace("<image> ", "").replace("<image>", "") for r in records]
    facts = build_tiny_llm(
        args.out, texts, vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_layers=args.layers,
        num_heads=args.heads, steps=args.steps, seed=args.seed, overwrite=args.overwrite,
    )  # fmt: skip
    print(
        f"wrote {args.out}: a {int(facts['parameters']):,} parameter causal LM and its tokenizer; "
        f"pretraining "
        f"loss {facts['first_loss']:.3f} -> {facts['last_loss']:.3f} over {args.steps} steps on "
        f"{len(texts)} texts"
    )
    return 0
