"""Tokenizers: images of any band subset of a known sensor -> tokens with their coordinates."""

from spectravlm.tokenizers.base import PatchTokenizer
from spectravlm.tokenizers.channels import Channel, channel_universe, sensor_channels
from spectravlm.tokenizers.grouped import GroupedTokenizer
from spectravlm.tokenizers.image import ChannelImage, prepare_optical
from spectravlm.tokenizers.sar import SARFrontEnd, to_db, to_linear
from spectravlm.tokenizers.tokens import TokenCoords, TokenGrid, Tokens
from spectravlm.tokenizers.wavelength import WavelengthTokenizer

__all__ = [
    "Channel",
    "ChannelImage",
    "GroupedTokenizer",
    "PatchTokenizer",
    "SARFrontEnd",
    "TokenCoords",
    "TokenGrid",
    "Tokens",
    "WavelengthTokenizer",
    "channel_universe",
    "prepare_optical",
    "sensor_channels",
    "to_db",
    "to_linear",
]
