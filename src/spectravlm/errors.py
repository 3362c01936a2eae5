"""The library's exception types.

Every error that spectravlm raises on bad input derives from :class:`SpectraVLMError`, so a caller
can catch the library's errors without catching programming errors. Each message names the thing
that is wrong (a file, an array, a band) and what was expected.
"""

from __future__ import annotations


class SpectraVLMError(Exception):
    """Base class of every error raised by spectravlm on bad input."""


class UnknownSensorError(SpectraVLMError, KeyError):
    """A sensor name that the catalogue does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class UnknownBandError(SpectraVLMError, KeyError):
    """A band name that a sensor does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreError(SpectraVLMError):
    """A cube store that is missing, malformed or cannot be read."""


class StoreExistsError(StoreError, FileExistsError):
    """A store already exists where one would be written without ``overwrite``."""


class StoreVersionError(StoreError):
    """A store written by a newer (or unknown) version of the store format."""


class StoreCorruptError(StoreError):
    """A chunk or metadata document of a store that cannot be decoded."""


class StoreReadError(StoreError):
    """A store that cannot be reached or read: an unreachable URL, or read errors that outlasted retries."""


class IngestError(SpectraVLMError):
    """Source rasters or arrays that cannot be ingested as given."""


class DataConfigError(SpectraVLMError, ValueError):
    """A data-loading request that the stores cannot satisfy (bands, window size, sensors)."""


class ModelConfigError(SpectraVLMError, ValueError):
    """A model configuration or input that does not fit the model (bands, units, shapes)."""


class NumericInputError(SpectraVLMError, ValueError):
    """Text or values the numeric tokenizer cannot encode or decode faithfully (NaN, overflow, length)."""


class UnknownUnitError(ModelConfigError):
    """A unit spelling that is not one of the library's physical units, or a unit a model cannot take."""
