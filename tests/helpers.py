"""Shared helpers and fixtures of the model tests: a small demo store, a batch from it, CLI arguments.

Imported by the ``conftest.py`` of the test folders that use them (``pythonpath = ["tests"]``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from spectravlm.data.datamodule import CubeDataModule
from spectravlm.data.demo import write_demo_store
from spectravlm.encoders.spectral import task_encoder
from spectravlm.stack import SensorStack
from spectravlm.tasks.base import BaseTask


@pytest.fixture(autouse=True)
def one_thread():
    """Run these small models on one thread: on a shared, oversubscribed CPU, two OpenMP threads wait on
    each other at every small op (measured here: a 6-step fit took 1.2 s on one thread, 11-27 s on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 x 128 px synthetic demo store (S2 10 bands x 10 dates, S1 VV/VH x 12 dates, AGB)."""
    path = tmp_path_factory.mktemp("demo") / "demo.zarr"
    write_demo_store(path, size=128, seed=0)
    return path


def demo_datamodule(store: Path, **kw) -> CubeDataModule:
    """Windows of 32 px, blocks of 64 px (4 blocks: 2 train, 1 val, 1 test), raw values, no workers."""
    args = dict(
        stores=[str(store)],
        groups=["s2", "s1"],
        window_size=32,
        block_size=64,
        split_fractions=(0.5, 0.25, 0.25),
        batch_size=4,
        num_workers=0,
        seed=0,
    )
    return CubeDataModule(**(args | kw))


@pytest.fixture(scope="session")
def demo_batch(demo_store: Path) -> SensorStack:
    """One raw training batch (4 windows of 32 px) of the demo store."""
    dm = demo_datamodule(demo_store, augment=False)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.fixture(scope="session")
def demo_bands(demo_batch: SensorStack) -> dict[str, tuple[str, ...]]:
    return {g: demo_batch[g].bands for g in demo_batch}


def clone_stack(stack: SensorStack) -> SensorStack:
    """A deep copy of a batch (tests modify values)."""
    from dataclasses import replace

    series = {
        k: replace(s, values=s.values.clone(), valid=s.valid.clone(), times=s.times.clone())
        for k, s in stack.series.items()
    }
    return replace(stack, series=series, targets={k: v.clone() for k, v in stack.targets.items()})


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain_demo.yaml"


def demo_cli_args(store: Path, epochs: int, *extra: str) -> list[str]:
    """``spectravlm fit`` arguments: the real demo config, shrunk to the test store and the test encoder."""
    return [
        "fit",
        "--config",
        str(DEMO_CONFIG),
        f"--data.stores=[{store}]",
        "--data.window_size=32",
        "--data.block_size=64",
        "--data.split_fractions=[0.5, 0.25, 0.25]",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--model.init_args.encoder=test",
        "--model.init_args.patch_size=8",
        "--model.init_args.decoder_dim=64",
        "--model.init_args.decoder_depth=1",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


def train_losses(csv_dir: Path) -> dict[int, float]:
    """``{step: train/loss}`` from the newest CSVLogger run under ``csv_dir``."""
    import csv

    runs = sorted(csv_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    rows = csv.DictReader((runs[-1] / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


class ProbeTask(BaseTask):
    """A minimal non-pretraining task with an encoder: the mean target of a window from pooled features.

    Used to test what every encoder task gets from :class:`BaseTask` (loading a pretrained encoder,
    parameter groups, freezing, export, CLI arguments). It declares ``bands`` but not ``window_size``.
    """

    def __init__(
        self,
        bands: dict[str, list[str]] | None = None,
        target: str = "agb",
        encoder: str = "test",
        patch_size: int = 8,
        init_encoder: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        encoder_lr_mult: float = 1.0,
        layer_decay: float | None = None,
        encoder_trainable: str | int = "all",
        refit_statistics: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()

    def configure_models(self) -> None:
        hp = self.hparams
        self._encoder = task_encoder(
            hp.encoder, hp.patch_size, "wavelength", "joint", 2, 0.0, False, hp.init_encoder
        )
        self.encoder_loaded = hp.init_encoder is not None
        self.head = torch.nn.Linear(self._encoder.dim, 1)

    @property
    def encoder(self):  # type: ignore[no-untyped-def]
        return self._encoder

    def training_step(self, batch: SensorStack, batch_idx: int) -> torch.Tensor:
        target = batch.targets[self.hparams.target].nanmean(dim=(1, 2))
        pred = self.head(self._encoder(batch)).squeeze(-1)
        ok = torch.isfinite(target)
        return ((pred - target.nan_to_num()) ** 2 * ok).sum() / ok.sum().clamp_min(1)


class KillAt(L.Callback):
    """SIGKILL this process when the training loop is about to start the step after ``step``.

    The checkpoint written at the end of step ``step`` (``ModelCheckpoint`` saves in ``on_train_batch_end``
    and at epoch ends) is complete by then, so a test can kill a real process at a known point, without
    sleeping or polling.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


# CUDA's autocast runs these in bf16/fp16 too; the CPU's autocast leaves them in float32 (torch's
# autocast op lists), so a CPU test under autocast alone would miss a precision bug on the GPU.
_CUDA_ONLY_LOWER_PRECISION = {
    torch.einsum, torch.mv, torch.addmv, torch.addr, torch.chain_matmul, torch.linalg.multi_dot,
}  # fmt: skip


class CudaAutocast(torch.overrides.TorchFunctionMode):
    """CPU bf16 autocast plus CUDA's extra bf16 ops: catches GPU-only autocast bugs on a CPU.

    Inside an enabled CPU autocast region, the ops that CUDA's autocast lowers and the CPU's does not
    get their float32 tensor arguments cast to bfloat16, as they would on a GPU; anything that turns
    autocast off (``torch.autocast(..., enabled=False)``) is left alone, as on a GPU.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CUDA_ONLY_LOWER_PRECISION and torch.is_autocast_enabled("cpu"):

            def low(x):
                if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
                    return x.to(torch.bfloat16)
                if isinstance(x, (list, tuple)):
                    return type(x)(low(v) for v in x)
                return x

            args = tuple(low(a) for a in args)
        return func(*args, **kwargs)


def cuda_autocast():
    """Enter CPU bf16 autocast with CUDA's op list (:class:`CudaAutocast`): ``with cuda_autocast(): ...``."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    stack.enter_context(CudaAutocast())
    return stack
