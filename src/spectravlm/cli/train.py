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
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from spectravlm.callbacks.checkpoint_io import AtomicCheckpointIO
    from spectravlm.data.datamodule import CubeDataModule
    from spectravlm.tasks.base import BaseTask

    class SpectraCLI(LightningCLI):
        """LightningCLI that gives a task the data facts it declares, with atomic checkpoints."""

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            link_data_to_model(config)

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
