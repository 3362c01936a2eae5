"""Batches of instruction data for the VLM: scenes, the regions questions name, tokenized conversations.

:class:`QADataModule` reads a JSONL file of :class:`~spectravlm.data.qa.QARecord` s (``spectravlm data qa``),
checks every record against its store (groups, window inside the grid, the target of AGB questions), and
yields :class:`QABatch` es:

* ``scenes``: a :class:`~spectravlm.stack.SensorStack`, one scene per record: the record's window read through
  :class:`~spectravlm.data.dataset.CubeDataset` (raw values, the store's validity), every acquisition of each
  group in the record's date range kept (cloudy ones too, masked); a group without any date in the range gets
  one empty, fully masked date, so that every scene has every group;
* ``regions``: ``[B, H, W]`` True on the pixels the question is about;
* ``inputs``: the conversation tokenized by the model's processor with labels only on the answer tokens
  (:class:`~spectravlm.vlm.processor.VLMInputs`), once the task hands its processor over (:meth:`QADataModule.
  attach`); before that, the texts alone;
* ``records``: the records, for metrics.

A conversation becomes a prompt and a target by :func:`render`: each user turn is put in ``prompt_template``
(``{question}``), earlier assistant turns follow their question as context, the last assistant turn is the
target (after one space).

This module imports no model: the processor arrives as an object with ``__call__(prompts, targets)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from spectravlm.data.dataset import CubeDataset
from spectravlm.data.qa import QARecord, check_records, read_qa, store_path
from spectravlm.data.windows import SPLITS, Window
from spectravlm.errors import DataConfigError
from spectravlm.stack import SensorStack, collate_stacks

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"


def render(record: QARecord, template: str = DEFAULT_TEMPLATE) -> tuple[str, str]:
    """The prompt and the target of a record's conversation (see the module docstring)."""
    parts = [
        template.format(question=turn["content"]) if turn["role"] == "user" else " " + turn["content"] + "\n"
        for turn in record.conversation[:-1]
    ]
    return "".join(parts), " " + record.conversation[-1]["content"]


def select_dates(stack: SensorStack, start: np.datetime64, end: np.datetime64) -> SensorStack:
    """A one-scene stack with the acquisitions of each group in ``[start, end]`` (inclusive days).

    A group without any date in the range keeps one empty date (zeros, ``valid`` False, ``times`` 0: the
    padding of :func:`~spectravlm.stack.collate_stacks`).
    """
    lo, hi = (
        int(start.astype("datetime64[D]").astype(np.int64)),
        int(end.astype("datetime64[D]").astype(np.int64)),
    )
    series = {}
    for name, s in stack.series.items():
        days = s.times[0]
        index = torch.nonzero((days >= lo) & (days <= hi) & (days != 0)).flatten()
        if len(index):
            valid = s.valid[:, index]
            series[name] = replace(
                s,
                values=s.values[:, index],
                times=s.times[:, index],
                valid=valid,
                all_valid=bool(valid.all()),
            )
        else:
            series[name] = replace(
                s,
                values=torch.zeros_like(s.values[:, :1]),
                times=torch.zeros_like(s.times[:, :1]),
                valid=torch.zeros_like(s.valid[:, :1]),
                all_valid=False,
            )
    return SensorStack(series=series, targets=stack.targets, origin=stack.origin, index=stack.index)


@dataclass
class QASample:
    """One record's scene and texts (a batch of one)."""

    scene: SensorStack
    region: Tensor  # (1, H, W)
    prompt: str
    target: str
    record: QARecord


@dataclass
class QABatch:
    """A batch of instruction data (see the module docstring).

    Attributes:
        scenes: One scene per record ``[B, ...]``.
        regions: ``[B, H, W]`` the pixels each question is about.
        prompts: The rendered prompts.
        targets: The answers trained on.
        records: The records.
        inputs: The tokenized conversations with answer-only labels (once a processor is attached).

    """

    scenes: SensorStack
    regions: Tensor
    prompts: list[str]
    targets: list[str]
    records: list[QARecord]
    inputs: Any = None

    @property
    def batch_size(self) -> int:
        """Records in the batch."""
        return len(self.records)

    def to(self, *args: Any, **kwargs: Any) -> QABatch:
        """Move the tensors (Lightning calls this to put a batch on the device)."""
        device = kwargs.get("device", args[0] if args else None)
        scenes = self.scenes.to(*args, **kwargs)
        inputs = None if self.inputs is None else self.inputs.to(device)
        return replace(self, scenes=scenes, regions=self.regions.to(device), inputs=inputs)


class QADataset(Dataset[QASample]):
    """The records of one split, each read as a scene (see the module docstring).

    Args:
        records: The records.
        root: Folder that relative store paths are relative to (the JSONL's).
        template: The prompt template.
        targets: Target layers to read with each scene (for expert fitting and maps); every store must have
            them.

    """

    def __init__(
        self,
        records: Sequence[QARecord],
        root: Path | None,
        template: str = DEFAULT_TEMPLATE,
        targets: Sequence[str] = (),
    ) -> None:
        self.records = list(records)
        self.root = root
        self.template = template
        self.targets = tuple(targets)
        sizes = {r.window["size"] for r in self.records}
        if len(sizes) > 1:
            raise DataConfigError(
                f"records have windows of several sizes {sorted(sizes)}; a batch takes one size"
            )
        self._keys: dict[tuple[str, tuple[str, ...]], list[Window]] = {}
        self._where: list[tuple[tuple[str, tuple[str, ...]], int]] = []
        for r in self.records:
            key = (store_path(r, root), tuple(r.groups))
            windows = self._keys.setdefault(key, [])
            w = Window(0, r.window["row"], r.window["col"], r.window["size"])
            if w not in windows:
                windows.append(w)
            self._where.append((key, windows.index(w)))
        self._datasets: dict[tuple[str, tuple[str, ...]], CubeDataset] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _dataset(self, key: tuple[str, tuple[str, ...]]) -> CubeDataset:
        if key not in self._datasets:
            path, groups = key
            size = self._keys[key][0].size
            self._datasets[key] = CubeDataset(
                [path], groups=list(groups), targets=list(self.targets), window_size=size,
                windows=self._keys[key], empty_windows="mask", pool_slots=0,
            )  # fmt: skip
        return self._datasets[key]

    def scene(self, index: int) -> tuple[SensorStack, Tensor]:
        """Record ``index``'s scene (one-scene stack) and region ``[1, H, W]``."""
        record = self.records[index]
        key, position = self._where[index]
        stack = self._dataset(key).read_batch([position])
        start, end = (np.datetime64(d, "D") for d in record.dates)
        scene = select_dates(stack, start, end)
        size = record.window["size"]
        region = torch.zeros(1, size, size, dtype=torch.bool)
        r = record.region
        top, left = r["row"] - record.window["row"], r["col"] - record.window["col"]
        region[0, top : top + r["height"], left : left + r["width"]] = True
        return scene, region

    def __getitem__(self, index: int) -> QASample:
        scene, region = self.scene(index)
        prompt, target = render(self.records[index], self.template)
        return QASample(scene, region, prompt, target, self.records[index])

    def window_scenes(self) -> Iterator[SensorStack]:
        """Every distinct window of the split once, all dates (with the targets): for fitting experts."""
        for key, windows in self._keys.items():
            ds = self._dataset(key)
            for position in range(len(windows)):
                yield ds.read_batch([position])


class QACollate:
    """Collate samples into a :class:`QABatch`, tokenizing with ``processor`` when one is set (picklable)."""

    def __init__(self, processor: Callable[..., Any] | None = None) -> None:
        self.processor = processor

    def __call__(self, samples: Sequence[QASample]) -> QABatch:
        """One batch of the samples (tokenized when a processor is given)."""
        prompts = [s.prompt for s in samples]
        targets = [s.target for s in samples]
        inputs = None if self.processor is None else self.processor(prompts, targets)
        return QABatch(
            scenes=collate_stacks([s.scene for s in samples]),
            regions=torch.cat([s.region for s in samples]),
            prompts=prompts,
            targets=targets,
            records=[s.record for s in samples],
            inputs=inputs,
        )


class QADataModule(L.LightningDataModule):
    """Instruction data of a JSONL file (``spectravlm data qa``) for :class:`~spectravlm.tasks.vlm.VLMTask`.

    Args:
        qa: The JSONL file.
        batch_size: Records per batch.
        num_workers: DataLoader worker processes.
        seed: Seed of the training shuffle.
        types: Keep only these question types (default: all).
        prompt_template: How a question becomes the prompt (default: the model's, set by the task's
            :meth:`attach`; :data:`DEFAULT_TEMPLATE` without a model).
        targets: Target layers read with every scene (the task asks for those its experts are fit on).
        limit: Use at most this many records of each split (the first ones), for quick runs.

    """

    def __init__(
        self,
        qa: str,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        types: Sequence[str] | None = None,
        prompt_template: str | None = None,
        targets: Sequence[str] = (),
        limit: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["prompt_template"])  # the task's (loggers merge the two hparams)
        self.qa = os.fspath(qa)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.types = None if types is None else list(types)
        self.prompt_template = prompt_template
        self.targets = list(targets)
        self.limit = limit
        # not "datasets": that name means CubeDatasets to the callbacks
        self.splits: dict[str, QADataset] = {}
        self.processor: Callable[..., Any] | None = None

    def attach(
        self,
        processor: Callable[..., Any] | None,
        prompt_template: str | None = None,
        targets: Sequence[str] = (),
    ) -> None:
        """Tokenize with the model's ``processor`` and render prompts with its ``prompt_template``.

        ``targets`` are read with the scenes (those the task's experts are fit on).
        """
        self.processor = processor
        if targets:
            self.targets = sorted(set(self.targets) | set(targets))
            for ds in self.splits.values():
                ds.targets = tuple(self.targets)
                ds._datasets.clear()
        if prompt_template is not None:
            if self.prompt_template is not None and self.prompt_template != prompt_template:
                raise DataConfigError(
                    f"data prompt_template {self.prompt_template!r} differs from the model's "
                    f"{prompt_template!r}"
                )
            self.prompt_template = prompt_template
            for ds in self.splits.values():
                ds.template = prompt_template

    @property
    def template(self) -> str:
        """The prompt template in use."""
        return self.prompt_template or DEFAULT_TEMPLATE

    def records(self) -> list[QARecord]:
        """The file's records (type filter applied), checked against their stores."""
        records = read_qa(self.qa)
        if self.types is not None:
            records = [r for r in records if r.type in self.types]
        check_records(records, Path(self.qa).absolute().parent, self.qa)
        return records

    def setup(self, stage: str | None = None) -> None:
        """Read and check the records, one dataset per split (idempotent)."""
        if self.splits:
            return
        records = self.records()
        unknown = sorted({r.split for r in records} - set(SPLITS))
        if unknown:
            raise DataConfigError(f"{self.qa}: splits {unknown} are not train, val or test")
        root = Path(self.qa).absolute().parent
        for name in SPLITS:
            chosen = [r for r in records if r.split == name][: self.limit]
            self.splits[name] = QADataset(chosen, root, self.template, self.targets)

    def _loader(self, split: str, shuffle: bool) -> DataLoader[QASample]:
        if not self.splits:
            self.setup()
        ds = self.splits[split]
        if len(ds) == 0:
            raise DataConfigError(f"{self.qa} has no {split} record")
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=shuffle, generator=generator,
            num_workers=self.num_workers, collate_fn=QACollate(self.processor),
            persistent_workers=self.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader[QASample]:
        """Training records, shuffled (seeded)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[QASample]:
        """Validation records, in order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[QASample]:
        """Test (held-out) records, in order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[QASample]:
        """Test records, in order (``spectravlm predict`` answers the held-out questions)."""
        return self._loader("test", shuffle=False)


__all__ = [
    "DEFAULT_TEMPLATE",
    "QABatch",
    "QACollate",
    "QADataModule",
    "QADataset",
    "QASample",
    "render",
    "select_dates",
]
