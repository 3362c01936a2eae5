"""Thin LightningModules over plain modules: pretraining (and, later, regression and VLM tasks)."""

from spectravlm.tasks.base import BaseTask, store_bands
from spectravlm.tasks.mae import MAEOutput, MaskedAutoencoder, build_encoder, build_mae
from spectravlm.tasks.masking import choose_hidden
from spectravlm.tasks.pretrain import PretrainTask

__all__ = [
    "BaseTask",
    "MAEOutput",
    "MaskedAutoencoder",
    "PretrainTask",
    "build_encoder",
    "build_mae",
    "choose_hidden",
    "store_bands",
]
