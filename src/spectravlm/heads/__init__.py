"""Heads on encoder tokens: cross-modal projections and the MLP-Mixer regression heads."""

from spectravlm.heads.contrastive import ProjectionHead, info_nce
from spectravlm.heads.mixer import DenseMixerHead, MixerStack, ScalarMixerHead
from spectravlm.heads.targets import TargetTransform
from spectravlm.heads.uncertainty import Likelihood, RegressionOutput

__all__ = [
    "DenseMixerHead",
    "Likelihood",
    "MixerStack",
    "ProjectionHead",
    "RegressionOutput",
    "ScalarMixerHead",
    "TargetTransform",
    "info_nce",
]
