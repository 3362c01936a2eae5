"""Thin LightningModules over plain modules: pretraining (and regression and VLM tasks)."""

from spectravlm.tasks.base import BaseTask
from spectravlm.tasks.pretrain import PretrainTask
from spectravlm.tasks.regression import RegressionTask as RegressionTask

__all__ = ["BaseTask", "PretrainTask"]
