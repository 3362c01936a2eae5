"""Metrics of generated answers: exact answers, number errors per question type in its units, routing.

* **Exact answer**: the generated text equals the reference answer once every number is written with the
  reference's decimals (the reference writes ``152.3``; a generated ``152.34121`` counts as ``152.3``), and
  surrounding spaces are ignored. Dates and other text must match exactly.
* **Number error**: the first number of the generated answer against the exact value the reference states
  (``answer["value"]``, in the question type's units): RMSE and MAE per question type. An answer without a
  number counts as *missing* (reported beside the errors; it enters no error).
* **Routing** (models with a number gate): per question type, the mean gate weight of each source at the
  stated value, and the share of answers each source won.

:class:`AnswerMetrics` is a ``torchmetrics.Metric`` (sums of tensors), so it is reduced across processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from spectravlm.numeric.parsing import find_numbers


def _rounded(text: str, decimals: Sequence[int | None]) -> str:
    """``text`` with its k-th number rewritten with ``decimals[k]`` decimals (as found where None)."""
    out, cursor = [], 0
    for k, span in enumerate(find_numbers(text)):
        d = decimals[k] if k < len(decimals) else None
        out.append(text[cursor : span.start])
        if d is None:
            out.append(span.canonical)
        else:
            value = round(span.value, d)
            out.append(f"{0.0 if value == 0 else value:.{d}f}")
        cursor = span.end
    out.append(text[cursor:])
    return "".join(out).strip()


def _decimals(text: str) -> list[int | None]:
    spans = find_numbers(text)
    return [
        len(s.canonical.split(".")[1]) if "." in s.canonical and "e" not in s.canonical else 0 for s in spans
    ]


def answer_matches(generated: str, reference: str) -> bool:
    """Whether ``generated`` states the reference answer exactly (numbers at the reference's decimals)."""
    decimals = _decimals(reference)
    if len(find_numbers(generated)) != len(decimals):
        return False
    return _rounded(generated, decimals) == _rounded(reference, decimals)


class AnswerMetrics(Metric):
    """Exact-answer rate, number RMSE/MAE and gate routing per question type (see the module docstring).

    Args:
        types: The question types, in order (others are counted under ``other``).
        sources: The number gate's sources (``lm`` first), or ``()`` without a gate.

    """

    full_state_update = False
    count: Tensor
    exact: Tensor
    numbers: Tensor
    missing: Tensor
    squared: Tensor
    absolute: Tensor
    weights: Tensor
    wins: Tensor

    def __init__(self, types: Sequence[str], sources: Sequence[str] = ()) -> None:
        super().__init__()
        self.types = [*types, "other"]
        self.sources = list(sources)
        n, s = len(self.types), max(1, len(self.sources))
        for name in ("count", "exact", "numbers", "missing", "squared", "absolute"):
            self.add_state(name, default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weights", default=torch.zeros(n, s, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("wins", default=torch.zeros(n, s, dtype=torch.float64), dist_reduce_fx="sum")

    def _index(self, qtype: str) -> int:
        return self.types.index(qtype) if qtype in self.types else len(self.types) - 1

    def update(
        self,
        types: Sequence[str],
        generated: Sequence[str],
        references: Sequence[str],
        numbers: Sequence[Sequence[float]],
        values: Sequence[float | None],
        sources: Sequence[Sequence[Any]] | None = None,
    ) -> None:
        """Add a batch of answers.

        Args:
            types: Question type of each answer.
            generated: The generated texts.
            references: The reference answers.
            numbers: The numbers of each generated answer.
            values: The exact value each reference states (``None`` for answers without one).
            sources: Per answer, the :class:`~spectravlm.vlm.generation.NumberSource` of each number.

        """
        for k, qtype in enumerate(types):
            i = self._index(qtype)
            self.count[i] += 1
            self.exact[i] += float(answer_matches(generated[k], references[k]))
            value = values[k]
            if value is None:
                continue
            if not numbers[k]:
                self.missing[i] += 1
                continue
            error = float(numbers[k][0]) - float(value)
            if not math.isfinite(error):
                self.missing[i] += 1
                continue
            self.numbers[i] += 1
            self.squared[i] += error * error
            self.absolute[i] += abs(error)
            if sources is not None and sources[k] and self.sources:
                first = sources[k][0]
                self.weights[i] += torch.tensor(
                    [first.weights.get(s, 0.0) for s in self.sources], dtype=torch.float64
                )
                self.wins[i, self.sources.index(first.source)] += 1

    def compute(self) -> dict[str, Any]:
        """Per type (and ``all``): ``count``, ``exact``, ``rmse``, ``mae``, ``missing``, ``gate``, ``won``.

        ``gate`` are the mean weights and ``won`` the shares of numbers won, per source (with a gate).
        """
        out: dict[str, Any] = {}
        for i, qtype in enumerate(self.types):
            n = float(self.count[i])
            if n == 0:
                continue
            k = float(self.numbers[i])
            row: dict[str, Any] = {
                "count": int(n),
                "exact": float(self.exact[i]) / n,
                "rmse": math.sqrt(float(self.squared[i]) / k) if k else math.nan,
                "mae": float(self.absolute[i]) / k if k else math.nan,
                "missing": int(self.missing[i]),
            }
            if self.sources and k:
                row["gate"] = {s: float(self.weights[i, j]) / k for j, s in enumerate(self.sources)}
                row["won"] = {s: float(self.wins[i, j]) / k for j, s in enumerate(self.sources)}
            out[qtype] = row
        total = float(self.count.sum())
        if total:
            out["all"] = {"count": int(total), "exact": float(self.exact.sum()) / total}
        return out


def format_report(report: dict[str, Any], units: dict[str, str]) -> str:
    """A table of :meth:`AnswerMetrics.compute` (one line per question type, the top gate source)."""
    lines = [
        f"{'type':20s} {'n':>5s} {'exact':>6s} {'RMSE':>10s} {'MAE':>10s} {'units':6s} top source (weight)"
    ]
    for qtype, row in report.items():
        if qtype == "all":
            continue
        top = ""
        if "gate" in row:
            name, weight = max(row["gate"].items(), key=lambda kv: kv[1])
            top = f"{name} ({weight:.2f})"
        lines.append(
            f"{qtype:20s} {row['count']:5d} {row['exact']:6.2f} {row['rmse']:10.4g} {row['mae']:10.4g} "
            f"{units.get(qtype, ''):6s} {top}"
        )
    if "all" in report:
        lines.append(f"{'all':20s} {report['all']['count']:5d} {report['all']['exact']:6.2f}")
    return "\n".join(lines)


__all__ = ["AnswerMetrics", "answer_matches", "format_report"]
