"""Where the numbers are in a text, what they are worth, and how a value is written back.

The rules, in the order they are applied (each one is a test in ``tests/numeric/test_parsing.py``):

1. **Protected spans are text, never numbers.** ISO dates and date-times (``2021-06-15``,
   ``2021-06-15T10:30:00Z``), year-months (``2021-06``, years 1900-2099, months 01-12), slash and
   dot dates (``15/06/2021``, ``2021/06/15``, ``15.06.2021``), clock times (``10:30``, ``10:30:15``)
   and MGRS tile codes (``33UUP``).
2. **A number starts at a word boundary.** It is not preceded by a letter, a digit, ``_`` or
   ``.``, nor by a letter and a hyphen. So band and product names stay text: ``B8A``, ``B02``,
   ``S2A``, ``Sentinel-2``, ``S2A_MSIL2A_20210615``.
3. **A number's body** is an integer (``0`` or a digit 1-9 followed by digits), an integer with
   thousands separators (``12,345``, ``1,234,567.5``: first group of 1-3 digits, then groups of
   exactly three, no digit or further ``,digit`` after them), a decimal (``3.14``, ``.5``), each
   with an optional exponent (``1.2e-3``, ``4E+7``).
4. **Leading zeros make a code, not a number**: ``007``, ``06`` stay text (``0.5`` and ``0`` are
   numbers).
5. **A minus sign belongs to the number** when it follows the start of the text, a space or one of
   ``( [ { = : ; , / < > ~ ≈`` (``-12.5 dB``, ``x=-3``, ``(-5)``); the Unicode minus ``−`` counts as
   ``-``. After a digit or a letter it is a hyphen and stays text: ``10-20`` is the range 10 to 20
   (two numbers); ``a-20`` is an identifier. A ``+`` before a number stays text.
6. **A number ends at a word boundary, but units may be glued on**: ``150t/ha`` is 150 then
   ``t/ha``, ``20%`` is 20 then ``%``. It may not be followed by a digit, ``_``, ``.digit``
   (``1.2.3`` is a version, text) or a glued run of letters that contains a digit or ``_``
   (``20210615T103031``, ``2x3``, ``10m2`` stay text).
7. **Lists versus thousands**: ``1,2,3`` and ``1,234,5`` are lists of numbers (the groups are not
   all three digits); ``12,345`` is twelve thousand three hundred and forty-five. A decimal comma
   (``12,5``) is read as the list 12, 5: only ``.`` is a decimal point.
8. **Limits.** A number with more than ``max_digits`` mantissa digits is an error (a digit string
   that long is an identifier or garbage, not a quantity); a value outside float32's normal range
   (``|x| > 3.4028235e38``, or non-zero with ``|x| < 1.1754944e-38``) is an error. Values are kept
   as float32; the words ``NaN`` and ``inf`` are text.

Written form (:func:`format_number`): the shortest decimal string that reads back as the same
float32 (NumPy's ``unique=True`` Dragon4), positional when ``1e-4 <= |x| < 1e16`` or ``x == 0``,
otherwise scientific with a bare exponent (``1.5e-7``, ``3.4e38``); no trailing ``.0``, ``-`` for
negatives. ``150.0`` is written ``150``; ``12,345`` is written ``12345``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from spectravlm.errors import NumericInputError

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # smallest positive normal float32
DEFAULT_MAX_DIGITS = 32

_SIGN_BEFORE = r"(?:^|(?<=[\s(\[{=:;,/<>~≈]))"
_NO_WORD_BEFORE = r"(?<![\w.])(?<![^\W\d_]-)"
_INT = r"(?:0|[1-9][0-9]*)"
_THOUSANDS = r"(?:[1-9][0-9]{0,2}(?:,[0-9]{3})+(?![0-9]|,[0-9]))"
_MANTISSA = rf"(?:{_THOUSANDS}(?:\.[0-9]+)?|{_INT}(?:\.[0-9]+)?|\.[0-9]+)"
_EXPONENT = r"(?:[eE][+-]?[0-9]+)"
_END = r"(?![0-9_]|\.[0-9]|[^\W\d_]*[\d_])"

_PROTECTED = "|".join(
    [
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?",
        r"(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])",
        r"[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}",
        r"[0-9]{4}/[0-9]{1,2}/[0-9]{1,2}",
        r"[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{2,4}",
        r"[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?",
        r"[0-9]{1,2}[C-HJ-NP-X][A-HJ-NP-Z]{2}",
    ]
)

_PATTERN = re.compile(
    rf"""
    (?P<protected>{_NO_WORD_BEFORE}(?:{_PROTECTED})(?![\w]))
    |
    (?P<number>
        {_NO_WORD_BEFORE}
        (?P<sign>{_SIGN_BEFORE}[-−])?
        (?P<mantissa>{_MANTISSA})
        (?P<exponent>{_EXPONENT})?
        {_END}
    )
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class NumberSpan:
    """One number found in a text.

    Attributes:
        start: Index of the number's first character (its sign, if any) in the text.
        end: Index one past its last character (units glued after it are not included).
        text: The number as written, ``text[start:end]``.
        canonical: The number written without thousands separators, with ``-`` for the sign, ``e``
            for the exponent and no ``+`` in it: the character sequence of the ``digits`` mode.
        value: The value, already rounded to float32 (held in a Python float).

    """

    start: int
    end: int
    text: str
    canonical: str
    value: float


def _canonical(sign: str | None, mantissa: str, exponent: str | None) -> str:
    out = ("-" if sign else "") + mantissa.replace(",", "")
    if exponent:
        out += "e" + exponent[1:].replace("+", "")
    return out


def to_float32(value: float, what: str = "value") -> float:
    """Round ``value`` to float32, refusing what float32 cannot hold as a normal number.

    Args:
        value: The value to round.
        what: How to name the value in an error message.

    Returns:
        The float32 value, as a Python float.

    Raises:
        NumericInputError: NaN, infinity, ``|value| > 3.4028235e38`` or a non-zero
            ``|value| < 1.1754944e-38`` (it would become zero or lose precision silently).

    """
    if value != value or value in (float("inf"), float("-inf")):
        raise NumericInputError(f"{what} is {value}; expected a finite number")
    with np.errstate(over="ignore"):
        v32 = float(np.float32(value))
    if v32 in (float("inf"), float("-inf")):
        raise NumericInputError(f"{what} is {value!r}, beyond float32's range (|x| <= {FLOAT32_MAX:.8g})")
    if value != 0.0 and abs(v32) < FLOAT32_TINY:
        raise NumericInputError(
            f"{what} is {value!r}, below float32's smallest normal number {FLOAT32_TINY:.8g}; "
            "it would be stored as zero or lose precision"
        )
    return v32


def find_numbers(text: str, max_digits: int = DEFAULT_MAX_DIGITS) -> list[NumberSpan]:
    """Find the numbers in ``text`` by the rules of this module.

    Args:
        text: Any text.
        max_digits: Most mantissa digits a number may have.

    Returns:
        The numbers in order of position; spans do not overlap.

    Raises:
        NumericInputError: A number with more than ``max_digits`` digits, or a value that float32
            cannot hold (see :func:`to_float32`).

    Examples:
        >>> [s.value for s in find_numbers("B8A: 152.3 t/ha over 1,234 plots, VV -12.5 dB, 10-20 m")]
        [152.3000030517578, 1234.0, -12.5, 10.0, 20.0]

    """
    spans: list[NumberSpan] = []
    for match in _PATTERN.finditer(text):
        if match.group("number") is None:
            continue
        mantissa = match.group("mantissa")
        n_digits = sum(ch.isdigit() for ch in mantissa)
        if n_digits > max_digits:
            head = match.group("number")[:24]
            raise NumericInputError(
                f"number '{head}...' at character {match.start()} has {n_digits} digits; at most "
                f"{max_digits} are accepted (max_digits): a digit string that long is not a quantity"
            )
        canonical = _canonical(match.group("sign"), mantissa, match.group("exponent"))
        what = f"number '{match.group('number')}' at character {match.start()}"
        value = float(canonical)
        if value in (float("inf"), float("-inf")):  # float() overflows to inf beyond ~1.8e308
            raise NumericInputError(f"{what} is beyond float32's range (|x| <= {FLOAT32_MAX:.8g})")
        value = to_float32(value, what=what)
        spans.append(
            NumberSpan(
                start=match.start(),
                end=match.end(),
                text=match.group("number"),
                canonical=canonical,
                value=value,
            )
        )
    return spans


def format_number(value: float) -> str:
    """Write a value the way decoding writes it (see the module docstring).

    Args:
        value: The value; it is rounded to float32 first.

    Returns:
        The shortest string that reads back as the same float32.

    Raises:
        NumericInputError: A value that is not finite or that float32 cannot hold.

    """
    v32 = np.float32(to_float32(float(value)))
    magnitude = abs(float(v32))
    if magnitude == 0.0 or 1e-4 <= magnitude < 1e16:
        return np.format_float_positional(v32, unique=True, trim="-")
    return np.format_float_scientific(v32, unique=True, trim="-", exp_digits=1).replace("+", "")
