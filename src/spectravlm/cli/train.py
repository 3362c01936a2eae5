"""``spectravlm fit|validate|test|predict`` (LightningCLI over the tasks) and ``spectravlm export``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
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
    from spectravlm.data.bands import store_bands
    from spectravlm.data.datamodule import CubeDataModule
    from spectravlm.tasks.base import BaseTask

    class SpectraCLI(LightningCLI):
        """LightningCLI with the data-to-model links and atomic checkpoints."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments(
                ("data.stores", "data.groups"), "model.init_args.bands", compute_fn=store_bands
            )
            parser.link_arguments("data.window_size", "model.init_args.window_size")
            parser.link_arguments("data.seed", "model.init_args.seed")

        def _parse_ckpt_path(self) -> None:
            """Keep the config's model (LightningCLI would merge a ``--ckpt_path`` file's hyperparameters).

            That merge fails for subclass-mode models whose checkpoints store no class path, and would
            otherwise silently swap the configured architecture for the checkpoint's. Instead the task
            compares the two when the checkpoint loads and names any difference
            (``BaseTask.on_load_checkpoint``).
            """

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            trainer = super().instantiate_trainer(**kwargs)
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
                trainer.strategy.checkpoint_io = AtomicCheckpointIO()
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


def export_main(argv: Sequence[str]) -> int:
    """Run ``spectravlm export CHECKPOINT DIR``: write a pretraining checkpoint's encoder."""
    parser = argparse.ArgumentParser(
        prog="spectravlm export",
        description="Write the encoder of a pretraining checkpoint with save_pretrained.",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by spectravlm fit")
    parser.add_argument("dir", help="output directory (config.json, model.safetensors, pretraining.json)")
    args = parser.parse_args(list(argv))
    from pathlib import Path

    from spectravlm.errors import ModelConfigError
    from spectravlm.tasks.pretrain import PretrainTask

    if not Path(args.checkpoint).is_file():
        raise ModelConfigError(f"{args.checkpoint}: no such checkpoint file")
    task = PretrainTask.load_from_checkpoint(args.checkpoint, map_location="cpu")
    print(f"wrote {task.export_encoder(args.dir)}")
    return 0
