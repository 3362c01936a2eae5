"""The number-parsing rules, one case per rule, and the written form of values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectravlm.errors import NumericInputError
from spectravlm.numeric.parsing import find_numbers, format_number, to_float32


def found(text: str) -> list[tuple[str, float]]:
    return [(s.text, s.value) for s in find_numbers(text)]


def f32(x: float) -> float:
    return float(np.float32(x))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AGB is 152 t/ha", [("152", 152.0)]),
        ("NDVI 0.71", [("0.71", f32(0.71))]),
        ("half is .5", [(".5", 0.5)]),
        ("VV is -12.5 dB", [("-12.5", -12.5)]),
        ("x=-3 and (-5) and [−4.5]", [("-3", -3.0), ("-5", -5.0), ("−4.5", -4.5)]),
        ("cloud 1.2e-3 and 4E+7 and 3e5", [("1.2e-3", f32(1.2e-3)), ("4E+7", 4e7), ("3e5", 3e5)]),
        ("12,345 ha and 1,234,567.5 t", [("12,345", 12345.0), ("1,234,567.5", 1234567.5)]),
        ("the list 1,2,3", [("1", 1.0), ("2", 2.0), ("3", 3.0)]),
        ("groups 1,234,5", [("1", 1.0), ("234", 234.0), ("5", 5.0)]),
        ("decimal comma 12,5", [("12", 12.0), ("5", 5.0)]),
        ("AGB 150t/ha and 20% cover", [("150", 150.0), ("20", 20.0)]),
        ("10m and 5km2", [("10", 10.0)]),
        ("range 10-20 m", [("10", 10.0), ("20", 20.0)]),
        ("from -5-10", [("-5", -5.0), ("10", 10.0)]),
        ("+5 stays a plus", [("5", 5.0)]),
        ("1.5 at the end.", [("1.5", 1.5)]),
        ("ends with 7.", [("7", 7.0)]),
        ("zero 0 and -0", [("0", 0.0), ("-0", -0.0)]),
        ("ratio 1:1000", [("1", 1.0), ("1000", 1000.0)]),
        ("5±0.3 m", [("5", 5.0), ("0.3", f32(0.3))]),
    ],
)
def test_numbers_by_rule(text: str, expected: list[tuple[str, float]]) -> None:
    got = found(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    for (_, value), (_, want) in zip(got, expected, strict=True):
        assert value == want and math.copysign(1, value) == math.copysign(1, want)


@pytest.mark.parametrize(
    "text",
    [
        "B01 B02 B8A B11 B12",
        "S1A S1B S2A S2B",
        "Sentinel-1 Sentinel-2 Landsat-8 ResNet-50 a-20",
        "S2A_MSIL2A_20210615T103031_N0300_R108_T33UUP",
        "2021-06-15 2021-06-15T10:30:00Z 2021-06",
        "15/06/2021 2021/06/15 15.06.2021 10:30 10:30:15",
        "tile 33UUP",
        "version 1.2.3",
        "codes 007 and 06",
        "compact 20210615T103031 and 2x3 and 10m2",
        "NaN inf Infinity nan",
    ],
)
def test_not_numbers(text: str) -> None:
    assert found(text) == []


def test_spans_point_into_the_text() -> None:
    text = "B8A: AGB 1,234.5 t/ha; VV -12.5 dB on 2021-06-15."
    for span in find_numbers(text):
        assert text[span.start : span.end] == span.text
    assert [s.canonical for s in find_numbers(text)] == ["1234.5", "-12.5"]


def test_canonical_form() -> None:
    assert [s.canonical for s in find_numbers("−4.5 1.2E+3 12,345 .5")] == ["-4.5", "1.2e3", "12345", ".5"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("value 1e39", "beyond float32's range"),
        ("value -4e38", "beyond float32's range"),
        ("value 1e400", "beyond float32's range"),
        ("value 1e-40", "smallest normal"),
        ("id " + "1" * 40, "40 digits"),
    ],
)
def test_bad_numbers_raise(text: str, message: str) -> None:
    with pytest.raises(NumericInputError, match=message):
        find_numbers(text)


def test_max_digits_is_adjustable() -> None:
    assert find_numbers("1" * 38, max_digits=38)[0].value == f32(float("1" * 38))
    with pytest.raises(NumericInputError, match="max_digits"):
        find_numbers("123456", max_digits=5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 1e39, 1e-40])
def test_to_float32_refuses(bad: float) -> None:
    with pytest.raises(NumericInputError):
        to_float32(bad)
    with pytest.raises(NumericInputError):
        format_number(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (150.0, "150"),
        (152.3, "152.3"),
        (-12.5, "-12.5"),
        (0.0, "0"),
        (2e-4, "0.0002"),
        (1e-4, "1e-4"),  # float32(1e-4) is 9.99999975e-05, below the positional range
        (1.5e-7, "1.5e-7"),
        (1e16, "1e16"),
        (123456789.0, "123456790"),
        (3.4028235e38, "3.4028235e38"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


float32s = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=300, deadline=None)
@given(value=float32s)
def test_format_then_parse_is_exact(value: float) -> None:
    text = format_number(value)
    spans = find_numbers(f"AGB {text} t/ha")
    assert len(spans) == 1 and spans[0].text == text
    assert spans[0].value == value
    assert len(text) <= 17  # shortest round-trip form, never a 39-digit positional string
