"""Thin LightningModules over plain modules: pretraining (and regression and VLM tasks)."""

from spectravlm.tasks.base import BaseTask
from spectravlm.tasks.pixel_series import PixelSeriesTask
from spectravlm.tasks.points import PointsTask
from spectravlm.tasks.pretrain import PretrainTask
from spectravlm.tasks.regression import RegressionTask
from spectravlm.tasks.vlm import VLMTask

__all__ = ["BaseTask", "PixelSeriesTask", "PointsTask", "PretrainTask", "RegressionTask", "VLMTask"]
