"""Heads on encoder tokens: cross-modal projections (and the regression heads)."""

from spectravlm.heads.contrastive import ProjectionHead, info_nce

__all__ = ["ProjectionHead", "info_nce"]
