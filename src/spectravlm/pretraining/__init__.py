"""Masked multi-sensor pretraining: the masked autoencoder and its masking strategies (plain modules)."""

from spectravlm.pretraining.mae import MAEOutput, MaskedAutoencoder, build_mae
from spectravlm.pretraining.masking import MaskStrategy, choose_hidden

__all__ = ["MAEOutput", "MaskStrategy", "MaskedAutoencoder", "build_mae", "choose_hidden"]
