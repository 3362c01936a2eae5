"""Heads on encoder tokens: pretraining decoders and cross-modal projections."""

from spectravlm.heads.contrastive import ProjectionHead, info_nce
from spectravlm.heads.reconstruction import MaskedDecoder

__all__ = ["MaskedDecoder", "ProjectionHead", "info_nce"]
