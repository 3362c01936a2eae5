"""``spectravlm fit|validate|test|predict`` (LightningCLI over the tasks) and ``spectravlm export``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def lightning_cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """Build (and with ``run``, execute) the LightningCLI of ``spectravlm fit|validate|test|predict``.

    Args:
        args: command-line arguments after ``spectravlm`` (with ``run``, starting with the subcommand);
            ``None``: ``sys.argv[1:]``.
        run: run the subcommand; ``False`` parses and instantiates only (for tests and notebooks).

    Returns:
        The :class:`lightning.pytorch.cli.LightningCLI` object.

    """
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from spectravlm.callbacks.checkpoint_io import AtomicCheckpointIO
    from spectravlm.callbacks.summary import RunSummary
    from spectravlm.data.datamodule import CubeDataModule
    from spectravlm.tasks.base import BaseTask

    class SpectraCLI(LightningCLI):
        """LightningCLI with a run folder, a task's declared data facts, checked checkpoints, atomic saves."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument(
                "--run_dir",
                type=str | None,
                default=None,
                help="the run's folder: loggers with an empty save_dir write there, ModelCheckpoint without "
                "dirpath writes to <run_dir>/checkpoints (so --ckpt_path last finds it)",
            )

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            link_data_to_model(config)
            place_outputs(config)

        def _run_subcommand(self, subcommand: str) -> None:
            config = self.config[subcommand]
            ckpt_path = config.get("ckpt_path")
            if ckpt_path is not None:
                config["ckpt_path"] = resolve_checkpoint(ckpt_path, self.trainer, type(self.model).__name__)
                self.config_init[subcommand]["ckpt_path"] = config["ckpt_path"]
            super()._run_subcommand(subcommand)

        def _parse_ckpt_path(self) -> None:
            """Keep the config's model (LightningCLI would merge a ``--ckpt_path`` file's hyperparameters).

            That merge fails for subclass-mode models whose checkpoints store no class path, and would
            otherwise silently swap the configured architecture for the checkpoint's. Instead the task
            compares the two when the checkpoint loads and names any difference
            (``BaseTask.on_load_checkpoint``).
            """

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            trainer: Any = super().instantiate_trainer(**kwargs)
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
                trainer.strategy.checkpoint_io = AtomicCheckpointIO()
            if not any(isinstance(c, RunSummary) for c in trainer.callbacks):
                trainer.callbacks.append(RunSummary())
            return trainer

    return SpectraCLI(
        BaseTask,
        CubeDataModule,
        subclass_mode_model=True,
        args=None if args is None else list(args),
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        load_from_checkpoint_support=False,  # a checkpoint never silently replaces the config's model
    )


LINKED = ("bands", "window_size", "seed")
"""Task arguments that come from the data section when the task declares them (given once, in ``data``)."""


def link_data_to_model(config: Any) -> None:
    """Fill the model's ``bands``, ``window_size`` and ``seed`` from the data section, where declared.

    ``bands`` are read from the stores (:func:`~spectravlm.data.bands.store_bands`: every band of each
    group unless ``data.groups`` names bands). A task whose constructor lacks one of these gets nothing.
    """
    import importlib
    import inspect

    from spectravlm.data.bands import store_bands

    model = config.get("model")
    if model is None or not model.get("class_path"):
        return
    module, _, name = str(model["class_path"]).rpartition(".")
    params = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    data = config["data"]
    values = {
        "bands": lambda: store_bands(data["stores"], data["groups"]),
        "window_size": lambda: data["window_size"],
        "seed": lambda: data["seed"],
    }
    for key in LINKED:
        if key in params:
            config[f"model.init_args.{key}"] = values[key]()


def place_outputs(config: Any) -> None:
    """Derive the output folders from ``run_dir``, the one run-folder setting of a config.

    Loggers with an empty ``save_dir`` (``""``: TensorBoard's and CSV's require one) write under it, a
    ``ModelCheckpoint`` without ``dirpath`` to ``<run_dir>/checkpoints``, and it is the trainer's
    ``default_root_dir``; the exported encoder goes to ``<log_dir>/encoder``.
    """
    run_dir = config.get("run_dir")
    if not run_dir:
        return
    trainer = config["trainer"]
    if trainer.get("default_root_dir") is None:
        trainer["default_root_dir"] = run_dir
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if (
            hasattr(logger, "get")
            and logger.get("init_args") is not None
            and not logger["init_args"].get("save_dir")
        ):
            logger["init_args"]["save_dir"] = run_dir
    for callback in trainer.get("callbacks") or []:
        if hasattr(callback, "get") and str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            if callback.get("init_args") is not None and not callback["init_args"].get("dirpath"):
                callback["init_args"]["dirpath"] = str(Path(run_dir) / "checkpoints")


def resolve_checkpoint(ckpt_path: str, trainer: Any, task: str) -> str:
    """Check ``--ckpt_path`` before anything runs: ``last`` must exist, a file must be this task's checkpoint.

    Raises:
        CheckpointError: one line naming the file (or the folder searched) and what is wrong.

    """
    from spectravlm.encoders.pretrained import CheckpointError, read_checkpoint

    if ckpt_path in ("last", "best"):
        callbacks = [c for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)]
        found = sorted(
            (p for c in callbacks for p in Path(c.dirpath).glob(f"{ckpt_path}*.ckpt") if p.exists()),
            key=lambda p: p.stat().st_mtime,
        )
        if ckpt_path == "best":
            best = [c.best_model_path for c in callbacks if getattr(c, "best_model_path", "")]
            found = [Path(b) for b in best if Path(b).is_file()]
        if not found:
            where = ", ".join(str(c.dirpath) for c in callbacks) or "(no checkpoint folder configured)"
            raise CheckpointError(
                f"--ckpt_path {ckpt_path}: no {ckpt_path} checkpoint in {where}; drop --ckpt_path to start "
                "a new run, or give a checkpoint file"
            )
        path = found[-1]
    else:
        path = Path(ckpt_path)
    meta = read_checkpoint(path).get("spectravlm") or {}
    written_by = meta.get("task")
    if written_by is not None and written_by != task:
        raise CheckpointError(f"{path}: a {written_by} checkpoint; this run is a {task}")
    return str(path)


def export_main(argv: Sequence[str]) -> int:
    """Run ``spectravlm export CHECKPOINT DIR``: write the encoder of any task's checkpoint."""
    parser = argparse.ArgumentParser(
        prog="spectravlm export",
        description="Write the encoder of a spectravlm checkpoint (any task with an encoder) with "
        "save_pretrained: config.json, model.safetensors and training.json.",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by spectravlm fit")
    parser.add_argument("dir", help="output folder (config.json, model.safetensors, training.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(list(argv))
    import json

    from spectravlm.encoders.pretrained import read_checkpoint
    from spectravlm.encoders.spectral import SpectralEncoder

    ckpt = read_checkpoint(args.checkpoint)
    encoder = SpectralEncoder.from_checkpoint(args.checkpoint)
    meta = ckpt.get("spectravlm") or {}
    facts = {k: meta[k] for k in ("task", "bands", "window_size") if k in meta}
    facts["global_step"] = int(ckpt.get("global_step", 0))
    facts["checkpoint"] = str(args.checkpoint)
    out = encoder.save_pretrained(
        args.dir, overwrite=args.overwrite, extra_files={"training.json": json.dumps(facts, indent=2)}
    )
    print(f"spectravlm: wrote the encoder of {args.checkpoint} (step {facts['global_step']}) to {out}")
    return 0
