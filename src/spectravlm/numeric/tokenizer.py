"""A numeric-aware tokenizer around any Hugging Face fast tokenizer.

LLM tokenizers cut numbers into arbitrary pieces (a GPT-2-style BPE turns ``1234.5`` into ``12``
``34`` ``.`` ``5``), so quantities lose their meaning. :class:`NumericTokenizer` finds the numbers
first (rules in :mod:`spectravlm.numeric.parsing`) and encodes them in one of three modes:

- ``"xval"``: every number becomes one number token whose value is returned in the aligned float32
  tensor ``numbers`` (``number_mask`` marks those positions); the model scales the token's
  embedding by the value (:class:`~spectravlm.numeric.modules.NumberEmbedding`) and predicts values
  with :class:`~spectravlm.numeric.modules.NumberHead`. After xVal, Golkar et al. 2023,
  https://arxiv.org/abs/2310.02989.
- ``"digits"``: every number becomes a number token followed by one token per character of its
  canonical form: digits ``<|0|>``..``<|9|>``, ``<|.|>``, ``<|-|>`` (sign, also in the exponent),
  ``<|e|>``. Deterministic and independent of the wrapped vocabulary (cf. digit splitting in
  Touvron et al. 2023, https://arxiv.org/abs/2302.13971).
- ``"none"``: the wrapped tokenizer unchanged (the baseline).

The number token comes in two forms, ``<|num|>`` and ``" <|num|>"``: the second one also carries
the single space in front of the number, so that a number costs one token where the wrapped
tokenizer would have folded that space into the number's first piece (``"Ġ152"``). Both are added
to the wrapped tokenizer as special tokens (not normalised, never split). The model's embedding
matrix must grow to match (the resize step)::

    tok = NumericTokenizer(hf_tokenizer, mode="xval")
    model.resize_token_embeddings(len(tok))

Values are returned raw (float32), not scaled: decoding needs them exactly, and a log-type scaling
inverted in float32 would lose precision. The scaling for the embedding lives in the model side
(:class:`~spectravlm.numeric.scaling.NumberScaling`).

Decoding writes a number with :func:`~spectravlm.numeric.parsing.format_number` in ``xval`` mode
(shortest float32 round-trip string) and as its canonical characters in ``digits`` mode (the
number as written, without thousands separators or ``+``). Text other than numbers comes back as
the wrapped tokenizer would give it back.

Bad input raises :class:`~spectravlm.errors.NumericInputError`: NaN or infinite values, values
outside float32's normal range, numbers of more than ``max_digits`` digits, text that contains the
reserved number tokens, and sequences longer than ``max_length`` (or the wrapped tokenizer's
``model_max_length``) unless ``truncation=True``. Truncation never cuts a number in half: in
``digits`` mode a number that does not fit whole is dropped whole.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import AddedToken, AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from spectravlm.errors import NumericInputError
from spectravlm.numeric.parsing import DEFAULT_MAX_DIGITS, NumberSpan, find_numbers, format_number

NumericMode = Literal["xval", "digits", "none"]
MODES: tuple[str, ...] = ("xval", "digits", "none")

NUM_TOKEN = "<|num|>"
SPACE_NUM_TOKEN = " " + NUM_TOKEN
DIGIT_CHARS = "0123456789.-e"
DIGIT_TOKENS: dict[str, str] = {ch: f"<|{ch}|>" for ch in DIGIT_CHARS}
CONFIG_FILE = "numeric_tokenizer.json"
CONFIG_VERSION = 1


@dataclass(frozen=True)
class _Encoded:
    """One text, encoded but not yet truncated or padded."""

    ids: list[int]
    special: list[bool]  # token added by the wrapped tokenizer's post-processor (BOS/EOS/...)
    group: list[int]  # index of the number a token belongs to, -1 for other tokens
    values: list[float]


class NumericTokenizer:
    """Numeric-aware tokenizer wrapping a Hugging Face fast tokenizer.

    Args:
        tokenizer: Any fast tokenizer (``PreTrainedTokenizerFast``; in transformers 5 that is
            ``TokenizersBackend``). It is copied, then the number tokens are added to the copy; the
            tokenizer passed in is left as it was.
        mode: ``"xval"``, ``"digits"`` or ``"none"`` (see the module docstring).
        max_digits: Most mantissa digits a number may have; longer digit strings are an error.
        copy_tokenizer: Copy ``tokenizer`` before adding tokens (set False only when the caller
            owns it, as :meth:`from_pretrained` does).

    Attributes:
        tokenizer: The wrapped tokenizer, number tokens included.
        num_token_ids: Ids of ``<|num|>`` and ``" <|num|>"`` (empty in ``none`` mode).
        digit_token_ids: Id of each digit-mode character token (empty unless ``digits``).
        num_added_tokens: How many tokens wrapping added to the vocabulary.

    Examples:
        >>> tok = NumericTokenizer(hf_tokenizer, mode="xval")  # doctest: +SKIP
        >>> enc = tok(["mean AGB is 152.3 t/ha"], return_tensors="pt")  # doctest: +SKIP
        >>> enc["numbers"][enc["number_mask"]]  # doctest: +SKIP
        tensor([152.3000])
        >>> tok.batch_decode(enc["input_ids"], numbers=enc["numbers"])  # doctest: +SKIP
        ['mean AGB is 152.3 t/ha']

    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mode: NumericMode = "xval",
        max_digits: int = DEFAULT_MAX_DIGITS,
        copy_tokenizer: bool = True,
    ) -> None:
        if mode not in MODES:
            raise NumericInputError(f"mode '{mode}' is not known; expected one of {MODES}")
        if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
            raise NumericInputError(
                f"NumericTokenizer wraps fast (tokenizers-backed) Hugging Face tokenizers; got "
                f"{type(tokenizer).__name__}"
            )
        if max_digits < 1:
            raise NumericInputError(f"max_digits must be at least 1; got {max_digits}")
        self.tokenizer = copy.deepcopy(tokenizer) if copy_tokenizer else tokenizer
        self.mode: NumericMode = mode
        self.max_digits = max_digits
        new_tokens: list[str] = []
        if mode != "none":
            new_tokens = [NUM_TOKEN, SPACE_NUM_TOKEN]
        if mode == "digits":
            new_tokens += list(DIGIT_TOKENS.values())
        self.num_added_tokens = self.tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in new_tokens], special_tokens=True
        )
        ids: dict[str, int] = {t: self.tokenizer.convert_tokens_to_ids(t) for t in new_tokens}  # type: ignore[misc]
        self.num_token_ids: tuple[int, ...] = tuple(ids[t] for t in new_tokens[:2])
        self.digit_token_ids: dict[str, int] = (
            {ch: ids[t] for ch, t in DIGIT_TOKENS.items()} if mode == "digits" else {}
        )
        self._digit_of_id = {i: ch for ch, i in self.digit_token_ids.items()}
        self._reserved = re.compile("|".join(re.escape(t) for t in new_tokens)) if new_tokens else None
        self._our_ids = set(ids.values())

    # ------------------------------------------------------------------ the wrapped tokenizer's facts
    def _inner_special_ids(self) -> set[int]:
        """Ids of the wrapped tokenizer's own special tokens (read each time: pad_token may be set later)."""
        special = {i for i, tok in self.tokenizer.added_tokens_decoder.items() if tok.special}
        return (special | set(self.tokenizer.all_special_ids)) - self._our_ids

    def __len__(self) -> int:
        """Vocabulary size including added tokens: the size to resize a model's embeddings to."""
        return len(self.tokenizer)

    @property
    def pad_token_id(self) -> int | None:
        """The wrapped tokenizer's padding id."""
        return self.tokenizer.pad_token_id

    @property
    def eos_token_id(self) -> int | None:
        """The wrapped tokenizer's end-of-sequence id."""
        return self.tokenizer.eos_token_id

    @property
    def bos_token_id(self) -> int | None:
        """The wrapped tokenizer's beginning-of-sequence id."""
        return self.tokenizer.bos_token_id

    @property
    def model_max_length(self) -> int:
        """The wrapped tokenizer's context length (``VERY_LARGE_INTEGER`` when unset)."""
        return int(self.tokenizer.model_max_length)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """Token strings of ``ids`` (number tokens included), for inspection."""
        return list(self.tokenizer.convert_ids_to_tokens(list(ids)))

    def __repr__(self) -> str:
        return (
            f"NumericTokenizer(mode='{self.mode}', tokenizer={type(self.tokenizer).__name__}, "
            f"vocab={len(self)}, added={self.num_added_tokens})"
        )

    # ------------------------------------------------------------------------------- encoding
    def _mark(self, text: str) -> tuple[str, list[NumberSpan]]:
        """Replace every number by its number-token string; return the marked text and the numbers."""
        if not isinstance(text, str):
            raise NumericInputError(f"expected a str to encode; got {type(text).__name__}")
        if self.mode == "none":
            return text, []
        if self._reserved is not None and (hit := self._reserved.search(text)):
            raise NumericInputError(
                f"text contains the reserved token '{hit.group(0)}' at character {hit.start()}; "
                "NumericTokenizer uses it for numbers, so it cannot appear in input text"
            )
        spans = find_numbers(text, max_digits=self.max_digits)
        pieces: list[str] = []
        cursor = 0
        for span in spans:
            start = span.start
            marker = NUM_TOKEN
            if start > cursor and text[start - 1] == " ":
                start -= 1
                marker = SPACE_NUM_TOKEN
            pieces.append(text[cursor:start])
            pieces.append(marker)
            if self.mode == "digits":
                pieces.extend(DIGIT_TOKENS[ch] for ch in span.canonical)
            cursor = span.end
        pieces.append(text[cursor:])
        return "".join(pieces), spans

    def _encode_one(self, ids: list[int], special_mask: list[int], spans: list[NumberSpan]) -> _Encoded:
        group = [-1] * len(ids)
        values = [0.0] * len(ids)
        number = -1
        num_ids = set(self.num_token_ids)
        for pos, token_id in enumerate(ids):
            if token_id in num_ids:
                number += 1
                group[pos] = number
                if self.mode == "xval" and number < len(spans):
                    values[pos] = spans[number].value
            elif token_id in self._digit_of_id and number >= 0 and group[pos - 1] == number:
                group[pos] = number
        if number + 1 != len(spans):
            raise NumericInputError(
                f"the wrapped tokenizer kept {number + 1} number tokens for {len(spans)} numbers; "
                "it must keep added special tokens intact"
            )
        return _Encoded(ids=ids, special=[bool(m) for m in special_mask], group=group, values=values)

    def _truncate(self, enc: _Encoded, limit: int, side: str) -> _Encoded:
        content = [pos for pos, special in enumerate(enc.special) if not special]
        n_keep = limit - (len(enc.ids) - len(content))
        if n_keep < 0:
            raise NumericInputError(
                f"max_length {limit} is shorter than the {len(enc.ids) - len(content)} special tokens "
                "the wrapped tokenizer adds"
            )
        if side == "right":
            cut = n_keep
            while (
                0 < cut < len(content)
                and enc.group[content[cut]] >= 0
                and (enc.group[content[cut]] == enc.group[content[cut - 1]])
            ):
                cut -= 1  # never split a number: drop it whole
            dropped = set(content[cut:])
        else:
            cut = len(content) - n_keep
            while (
                0 < cut < len(content)
                and enc.group[content[cut]] >= 0
                and (enc.group[content[cut]] == enc.group[content[cut - 1]])
            ):
                cut += 1
            dropped = set(content[:cut])
        keep = [pos for pos in range(len(enc.ids)) if pos not in dropped]
        return _Encoded(
            ids=[enc.ids[p] for p in keep],
            special=[enc.special[p] for p in keep],
            group=[enc.group[p] for p in keep],
            values=[enc.values[p] for p in keep],
        )

    def __call__(
        self,
        text: str | Sequence[str],
        add_special_tokens: bool = True,
        padding: bool | Literal["longest", "max_length", "do_not_pad"] = False,
        truncation: bool = False,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: Literal["pt", "np"] | None = None,
    ) -> BatchEncoding:
        """Encode one text or a batch.

        Args:
            text: A string or a sequence of strings.
            add_special_tokens: Let the wrapped tokenizer add its BOS/EOS/... tokens.
            padding: ``True``/``"longest"``: pad to the longest sequence; ``"max_length"``: pad to
                ``max_length``; ``False``/``"do_not_pad"``: no padding. Padding uses the wrapped
                tokenizer's ``pad_token_id`` and ``padding_side``.
            truncation: Cut sequences to ``max_length`` (or ``model_max_length``) on the wrapped
                tokenizer's ``truncation_side``, never inside a number. Without it a sequence
                longer than that limit is an error.
            max_length: Length limit for truncation, padding and the length check.
            pad_to_multiple_of: Round padded length up to a multiple of this.
            return_tensors: ``"pt"`` (torch), ``"np"`` (NumPy) or ``None`` (lists).

        Returns:
            A ``BatchEncoding`` with ``input_ids`` and ``attention_mask`` (int64), ``numbers``
            (float32; the value at each number token in ``xval`` mode, 0 elsewhere) and
            ``number_mask`` (bool; True at the number tokens that carry a value, so only in
            ``xval`` mode). A single string gives un-batched lists, or a batch of one when
            ``return_tensors`` is set.

        Raises:
            NumericInputError: see the module docstring.

        """
        single = isinstance(text, str)
        texts: list[str] = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise NumericInputError("expected at least one text to encode; got an empty batch")
        if return_tensors not in (None, "pt", "np"):
            raise NumericInputError(f"return_tensors must be 'pt', 'np' or None; got {return_tensors!r}")
        pad_mode = "longest" if padding is True else "do_not_pad" if padding is False else padding
        if pad_mode not in ("longest", "max_length", "do_not_pad"):
            raise NumericInputError(
                f"padding must be a bool, 'longest', 'max_length' or 'do_not_pad'; got {padding!r}"
            )
        limit = max_length
        if limit is None and self.model_max_length < VERY_LARGE_INTEGER:
            limit = self.model_max_length
        if truncation and limit is None:
            raise NumericInputError(
                "truncation=True needs max_length (the wrapped tokenizer sets no model_max_length)"
            )
        if pad_mode == "max_length" and max_length is None:
            raise NumericInputError("padding='max_length' needs max_length")

        marked: list[str] = []
        spans: list[list[NumberSpan]] = []
        for t in texts:
            m, s = self._mark(t)
            marked.append(m)
            spans.append(s)
        raw = self.tokenizer(
            marked,
            add_special_tokens=add_special_tokens,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            verbose=False,
        )
        encoded = [
            self._encode_one(list(ids), list(mask), s)
            for ids, mask, s in zip(raw["input_ids"], raw["special_tokens_mask"], spans, strict=True)
        ]
        for i, enc in enumerate(encoded):
            if limit is not None and len(enc.ids) > limit:
                if not truncation:
                    raise NumericInputError(
                        f"text {i} is {len(enc.ids)} tokens long, more than the limit of {limit} "
                        "(max_length or the tokenizer's model_max_length); pass truncation=True to cut it"
                    )
                encoded[i] = self._truncate(enc, limit, self.tokenizer.truncation_side)
        return self._pad_and_pack(encoded, pad_mode, max_length, pad_to_multiple_of, return_tensors, single)

    def _pad_and_pack(
        self,
        encoded: list[_Encoded],
        pad_mode: str,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        return_tensors: str | None,
        single: bool,
    ) -> BatchEncoding:
        lengths = [len(e.ids) for e in encoded]
        target = max(lengths)
        if pad_mode == "max_length" and max_length is not None:
            target = max(target, max_length)
        if pad_mode != "do_not_pad" and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        if pad_mode == "do_not_pad":
            target = -1
        pad_id = self.pad_token_id
        if target >= 0 and pad_id is None and any(n < target for n in lengths):
            raise NumericInputError(
                "padding needs a pad token, and the wrapped tokenizer has none; set tokenizer.pad_token "
                "(e.g. to its eos_token) before wrapping it"
            )
        keys = ("input_ids", "attention_mask", "numbers", "number_mask")
        pad_values: tuple[Any, ...] = (pad_id, 0, 0.0, False)
        left = self.tokenizer.padding_side == "left"
        rows: dict[str, list[list[Any]]] = {k: [] for k in keys}
        for e in encoded:
            n_pad = max(target - len(e.ids), 0)
            columns: tuple[list[Any], ...] = (
                e.ids,
                [1] * len(e.ids),
                e.values,
                [g >= 0 and self.mode == "xval" for g in e.group],
            )
            for key, seq, pad in zip(keys, columns, pad_values, strict=True):
                rows[key].append([pad] * n_pad + seq if left else seq + [pad] * n_pad)
        if return_tensors is not None and len(set(map(len, rows["input_ids"]))) > 1:
            raise NumericInputError(
                f"sequences have different lengths {sorted(set(map(len, rows['input_ids'])))}; "
                "pass padding=True to return tensors"
            )
        data: dict[str, Any]
        if return_tensors is None:
            data = {k: (v[0] if single else v) for k, v in rows.items()}
        else:
            dtypes = (np.int64, np.int64, np.float32, np.bool_)
            arrays: dict[str, np.ndarray] = {
                k: np.asarray(rows[k], dtype=dt) for k, dt in zip(keys, dtypes, strict=True)
            }
            data = {k: torch.from_numpy(a) for k, a in arrays.items()} if return_tensors == "pt" else arrays
        return BatchEncoding(data)

    # ------------------------------------------------------------------------------- decoding
    def decode(
        self,
        token_ids: Sequence[int] | torch.Tensor | np.ndarray,
        numbers: Sequence[float] | torch.Tensor | np.ndarray | None = None,
        skip_special_tokens: bool = False,
    ) -> str:
        """Turn token ids (and, in ``xval`` mode, the aligned values) back into text.

        Args:
            token_ids: One sequence of ids.
            numbers: Values aligned with ``token_ids`` (``xval`` mode; read at the number tokens).
            skip_special_tokens: Drop the wrapped tokenizer's special tokens (padding, BOS, EOS);
                number tokens are always written as numbers.

        Returns:
            The text, numbers written as documented in the module docstring.

        Raises:
            NumericInputError: ``xval`` ids with number tokens but no ``numbers``, misaligned
                ``numbers``, or a NaN/infinite/out-of-range value at a number token.

        """
        ids = [int(i) for i in _as_list(token_ids)]
        if self.mode == "none":
            return str(self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))
        values = None if numbers is None else [float(v) for v in _as_list(numbers)]
        if values is not None and len(values) != len(ids):
            raise NumericInputError(
                f"numbers has {len(values)} values for {len(ids)} token ids; expected them aligned"
            )
        num_ids = set(self.num_token_ids)
        skip = self._inner_special_ids() if skip_special_tokens else set()
        out_ids: list[int] = []
        rendered: list[str] = []
        pos = 0
        while pos < len(ids):
            token_id = ids[pos]
            if token_id in num_ids and self.mode == "xval":
                if values is None:
                    raise NumericInputError(
                        "xval token ids contain number tokens; pass their values as numbers="
                    )
                rendered.append(format_number(_checked(values[pos], pos)))
                out_ids.append(token_id)
                pos += 1
            elif token_id in num_ids or token_id in self._digit_of_id:
                out_ids.append(token_id if token_id in num_ids else self.num_token_ids[0])
                pos += token_id in num_ids
                chars = []
                while pos < len(ids) and ids[pos] in self._digit_of_id:
                    chars.append(self._digit_of_id[ids[pos]])
                    pos += 1
                rendered.append("".join(chars))
            else:
                if token_id not in skip:
                    out_ids.append(token_id)
                pos += 1
        text = str(self.tokenizer.decode(out_ids, skip_special_tokens=False))
        parts = text.split(NUM_TOKEN)
        if len(parts) - 1 != len(rendered):
            raise NumericInputError(
                f"decoded text holds {len(parts) - 1} '{NUM_TOKEN}' strings for {len(rendered)} numbers: "
                "ordinary tokens spelled out the reserved number token"
            )
        out = [parts[0]]
        for number, part in zip(rendered, parts[1:], strict=True):
            out += [number, part]
        return "".join(out)

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | torch.Tensor | np.ndarray,
        numbers: Sequence[Sequence[float]] | torch.Tensor | np.ndarray | None = None,
        skip_special_tokens: bool = False,
    ) -> list[str]:
        """Decode a batch; ``numbers`` is aligned with ``sequences`` (see :meth:`decode`)."""
        rows = _as_list(sequences)
        value_rows = [None] * len(rows) if numbers is None else _as_list(numbers)
        if len(value_rows) != len(rows):
            raise NumericInputError(f"numbers has {len(value_rows)} rows for {len(rows)} sequences")
        return [
            self.decode(ids, values, skip_special_tokens=skip_special_tokens)
            for ids, values in zip(rows, value_rows, strict=True)
        ]

    def numbers_in(self, text: str) -> list[float]:
        """Return the float32 values of the numbers that this tokenizer finds in ``text``."""
        return [span.value for span in find_numbers(text, max_digits=self.max_digits)]

    # ---------------------------------------------------------------------------- persistence
    def save_pretrained(self, save_directory: str | Path) -> list[Path]:
        """Save the wrapped tokenizer (number tokens included) and ``numeric_tokenizer.json``.

        Returns:
            The files written.

        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = [Path(p) for p in self.tokenizer.save_pretrained(str(directory))]
        config = {"version": CONFIG_VERSION, "mode": self.mode, "max_digits": self.max_digits}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return [*files, directory / CONFIG_FILE]

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> NumericTokenizer:
        """Load a tokenizer saved by :meth:`save_pretrained` (through ``AutoTokenizer``).

        Raises:
            NumericInputError: The directory holds no ``numeric_tokenizer.json``, or one written
                by a newer version.

        """
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise NumericInputError(
                f"{path} does not exist; expected a directory written by NumericTokenizer.save_pretrained"
            )
        config = json.loads(path.read_text())
        if config.get("version", 0) > CONFIG_VERSION:
            raise NumericInputError(
                f"{path} has version {config.get('version')}; this spectravlm reads up to {CONFIG_VERSION}"
            )
        inner = AutoTokenizer.from_pretrained(str(directory))
        return cls(inner, mode=config["mode"], max_digits=int(config["max_digits"]), copy_tokenizer=False)


def _as_list(x: Any) -> list[Any]:
    if isinstance(x, torch.Tensor):
        return list(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return list(x.tolist())
    return list(x)


def _checked(value: float, pos: int) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise NumericInputError(f"the value at number token {pos} is {value}; expected a finite number")
    return value
