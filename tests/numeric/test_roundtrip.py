"""Property tests: decode(encode(text)) over generated texts of words, band names, dates and numbers.

The generator knows which parts are numbers, their values and their canonical spelling, so the expected
output is built independently of the parser: the non-number text must come back exactly and every value
within float32 precision (exactly equal to the float32 of the written value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from spectravlm.numeric import NumericTokenizer, format_number

KINDS = ["gpt2_like", "spm_digits", "llama3_like"]

WORDS = [
    "AGB",
    "mean",
    "biomass",
    "is",
    "over",
    "the",
    "t/ha",
    "dB",
    "NDVI",
    "VV",
    "VH",
    "plots",
    "ha",
    "NaN",
]
BANDS = ["B01", "B02", "B8A", "B11", "S1A", "S2A", "S2B", "Sentinel-2", "T33UUP", "33UUP"]
OTHER = ["2021-06-15", "2019-12", "15/06/2021", "10:30", "S2A_MSIL2A_20210615T103031", "v1.2.3", "007"]
PUNCT = [",", ";", ".", ":", "(", ")", "%", "+"]
UNITS = ["t/ha", "%", "m", "dB", "ha", "km"]


@dataclass(frozen=True)
class Part:
    """A piece of text; for numbers, their float32 values and canonical spellings in order."""

    text: str
    values: tuple[float, ...] = ()
    canonical: tuple[str, ...] = ()
    rest: tuple[str, ...] = ()  # text between and after the numbers (units, separators)


def f32(x: float) -> float:
    return float(np.float32(x))


@st.composite
def plain_number(draw: st.DrawFn, signed: bool = True) -> tuple[str, str]:
    """(written, canonical) of one number in any single-number form."""
    form = draw(st.sampled_from(["int", "decimal", "dot", "thousands", "exponent"]))
    negative = signed and draw(st.booleans())
    integer = draw(st.integers(0, 10**9))
    if form == "int":
        written = canonical = str(integer)
    elif form == "decimal":
        frac = draw(st.text("0123456789", min_size=1, max_size=6))
        written = canonical = f"{integer}.{frac}"
    elif form == "dot":
        frac = draw(st.text("0123456789", min_size=1, max_size=6))
        written = canonical = f".{frac}"
    elif form == "thousands":
        big = draw(st.integers(1000, 10**12))
        written, canonical = f"{big:,}", str(big)
    else:
        mantissa = f"{draw(st.integers(1, 9))}.{draw(st.integers(0, 999))}"
        exp = draw(st.integers(-30, 30))
        e_char = draw(st.sampled_from("eE"))
        plus = "+" if exp >= 0 and draw(st.booleans()) else ""
        written = f"{mantissa}{e_char}{plus}{exp}"
        canonical = f"{mantissa}e{exp}"
    if negative:
        written, canonical = "-" + written, "-" + canonical
    return written, canonical


@st.composite
def number_part(draw: st.DrawFn) -> Part:
    shape = draw(st.sampled_from(["single", "unit", "range", "list"]))
    if shape in ("single", "unit"):
        written, canonical = draw(plain_number())
        unit = draw(st.sampled_from(UNITS)) if shape == "unit" else ""
        return Part(written + unit, (f32(float(canonical)),), (canonical,), (unit,))
    if shape == "range":
        a, b = draw(st.integers(0, 500)), draw(st.integers(0, 5000))
        return Part(f"{a}-{b}", (float(a), float(b)), (str(a), str(b)), ("-", ""))
    items = draw(st.lists(st.integers(0, 99), min_size=2, max_size=5))
    return Part(
        ",".join(map(str, items)),
        tuple(float(i) for i in items),
        tuple(map(str, items)),
        tuple([","] * (len(items) - 1) + [""]),
    )


text_part = st.one_of(
    st.sampled_from(WORDS + BANDS + OTHER + PUNCT).map(Part),
    number_part(),
)


def rendered(parts: list[Part], mode: str) -> str:
    out = []
    for part in parts:
        if not part.values:
            out.append(part.text)
            continue
        pieces = []
        for value, canonical, rest in zip(part.values, part.canonical, part.rest, strict=True):
            pieces.append((format_number(value) if mode == "xval" else canonical) + rest)
        out.append("".join(pieces))
    return " ".join(out)


@pytest.fixture(scope="module")
def wrapped(hf_tokenizers: dict[str, PreTrainedTokenizerFast]) -> dict[tuple[str, str], NumericTokenizer]:
    out = {(k, m): NumericTokenizer(hf_tokenizers[k], mode=m) for k in KINDS for m in ("xval", "digits")}  # type: ignore[arg-type]
    for tok in out.values():
        if tok.pad_token_id is None:
            tok.tokenizer.pad_token = tok.tokenizer.eos_token
    return out


@pytest.mark.parametrize("mode", ["xval", "digits"])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(text_part, min_size=1, max_size=14))
def test_round_trip(
    wrapped: dict[tuple[str, str], NumericTokenizer], kind: str, mode: str, parts: list[Part]
) -> None:
    tok = wrapped[(kind, mode)]
    text = " ".join(p.text for p in parts)
    values = [v for p in parts for v in p.values]
    enc = tok(text)
    if mode == "xval":
        got = [v for v, m in zip(enc["numbers"], enc["number_mask"], strict=True) if m]
        assert got == values  # exactly the float32 values, in order
        assert len(got) == sum(i in tok.num_token_ids for i in enc["input_ids"])
    decoded = tok.decode(enc["input_ids"], enc["numbers"], skip_special_tokens=True)
    assert decoded == rendered(parts, mode)
    assert tok.numbers_in(decoded) == values


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.lists(text_part, min_size=1, max_size=8), min_size=1, max_size=4))
def test_batch_round_trip(
    wrapped: dict[tuple[str, str], NumericTokenizer], kind: str, batch: list[list[Part]]
) -> None:
    tok = wrapped[(kind, "xval")]
    texts = [" ".join(p.text for p in parts) for parts in batch]
    enc = tok(texts, padding=True, return_tensors="pt")
    decoded = tok.batch_decode(enc["input_ids"], enc["numbers"], skip_special_tokens=True)
    assert decoded == [rendered(parts, "xval") for parts in batch]
