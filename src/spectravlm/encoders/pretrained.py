"""``save_pretrained`` / ``from_pretrained`` / ``from_checkpoint`` for every encoder.

A pretrained folder holds ``config.json`` and ``model.safetensors``. The JSON records the class, the
library version, the constructor config (with ``stats_source``: where each sensor's normalisation
statistics came from), and, per sensor the model accepts, the catalogue facts of its bands (wavelength or
polarisation, GSD, units) with the normalisation statistics the model actually uses. The weights file
holds every parameter and buffer, the statistics included, so the folder alone says which bands it
expects and how their values are scaled.

Loading builds the model from the config (no pickled modules, no code from the checkpoint) and loads the
weights strictly: a missing or unexpected tensor is an error. Overrides change settings that do not define
the weights (gradient checkpointing, drop-path, attention backend, SAR speckle filter...); overriding a
field of ``architecture_fields`` with another value is an error.

``from_checkpoint`` reads a Lightning checkpoint written by any spectravlm task with an encoder: the task
records the encoder's class, config and the prefix of its weights in ``checkpoint["spectravlm"]``.

Writing is atomic: the folder is built aside and swapped into place (:class:`spectravlm.io.AtomicDirectory`),
and an existing folder is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from spectravlm.errors import ModelConfigError
from spectravlm.io import AtomicDirectory
from spectravlm.sensors import get_sensor

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="PretrainedMixin")


class CheckpointError(ModelConfigError):
    """A checkpoint file that is missing, truncated, not a checkpoint, or made by another model."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning/torch checkpoint file (tensors and plain Python values only).

    Raises:
        CheckpointError: one line naming the file and what is wrong with it (missing, empty, truncated,
            not a checkpoint).

    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file (a checkpoint is a .ckpt file)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises RuntimeError, pickle errors, zipfile errors, EOFError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "zip" in first.lower() or "eof" in first.lower() or "central directory" in first.lower():
            raise CheckpointError(
                f"{path}: not a complete checkpoint (truncated or not a torch file): {first}"
            ) from err
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: {first[:300]}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def sensor_metadata(sensors: tuple[str, ...], model: nn.Module | None = None) -> list[dict[str, Any]]:
    """Catalogue facts of ``sensors`` as JSON-ready dicts, with ``model``'s normalisation statistics."""
    statistics = getattr(model, "statistics", None)
    out = []
    for name in sensors:
        s = get_sensor(name)
        used = statistics.as_dict(s.name) if statistics is not None else {}
        bands = []
        for b in s.bands:
            stats = used.get(b.name) or (
                {"mean": b.stats.mean, "std": b.stats.std}
                if b.stats is not None
                else {"mean": None, "std": None}
            )
            bands.append(
                {
                    "name": b.name,
                    "kind": b.kind,
                    "wavelength_nm": b.wavelength_nm,
                    "bandwidth_nm": b.bandwidth_nm,
                    "frequency_ghz": b.frequency_ghz,
                    "polarisation": b.polarisation,
                    "gsd_m": b.gsd_m,
                    "units": b.units,
                    "mean": stats["mean"],
                    "std": stats["std"],
                }
            )
        extra = {k: v for k, v in used.items() if k not in s.band_names}  # SAR ratio channels
        out.append({"name": s.name, "platform": s.platform, "kind": s.kind, "bands": bands, "derived": extra})
    return out


class PretrainedMixin(nn.Module):
    """Adds ``save_pretrained`` / ``from_pretrained`` / ``from_checkpoint`` to a model built from ``config``.

    Subclasses set :attr:`config_class` (a dataclass with ``from_dict``) and :attr:`architecture_fields`,
    keep the config as ``self.config``, accept it as the only constructor argument, and may override
    :meth:`metadata` to add to the JSON.
    """

    config_class: ClassVar[type]
    architecture_fields: ClassVar[tuple[str, ...]] = ()
    config: Any

    def metadata(self) -> dict[str, Any]:
        """Extra JSON facts saved beside the config (default: the sensors with the statistics in use)."""
        sensors = getattr(self.config, "sensors", ())
        return {"sensors": sensor_metadata(tuple(sensors), self)}

    def save_pretrained(
        self, path: str | Path, overwrite: bool = False, extra_files: dict[str, str] | None = None
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (and ``extra_files``: name -> text) into ``path``.

        The folder is built aside and swapped in whole; an existing ``path`` is replaced only with
        ``overwrite``.
        """
        from spectravlm import __version__

        path = Path(path)
        doc = {
            "model_type": type(self).__name__,
            "spectravlm_version": __version__,
            "config": asdict(self.config),
            **self.metadata(),
        }
        with AtomicDirectory(path, overwrite=overwrite, what=f"{type(self).__name__} folder") as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(doc, indent=2))
            save_model(self, str(tmp / WEIGHTS_NAME))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
        return path

    @classmethod
    def config_from_dict(cls, d: dict[str, Any], overrides: dict[str, Any], where: str) -> Any:
        """Build the config from its saved form with ``overrides`` that leave the weights' meaning alone."""
        config = cls.config_class.from_dict(d)  # type: ignore[attr-defined]
        known = {f.name for f in fields(config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ModelConfigError(f"{where}: unknown {cls.config_class.__name__} fields {unknown}")
        changed = []
        for key, value in overrides.items():
            if key in cls.architecture_fields and _plain(getattr(config, key)) != _plain(value):
                changed.append(f"{key}={value!r} (saved: {getattr(config, key)!r})")
        if changed:
            raise ModelConfigError(
                f"{where}: cannot override {', '.join(changed)}: these fields define the pretrained weights"
            )
        return cls.config_class.from_dict({**asdict(config), **overrides})  # type: ignore[attr-defined]

    @classmethod
    def load_config(cls, path: str | Path, **overrides: Any) -> Any:
        """Read the config of the pretrained folder ``path`` (checking it holds this class)."""
        path = Path(path)
        file = path / CONFIG_NAME
        if not file.is_file():
            raise ModelConfigError(f"{path} is not a pretrained folder: {CONFIG_NAME} is missing")
        try:
            doc = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ModelConfigError(f"{file}: not valid JSON ({err})") from err
        if doc.get("model_type") != cls.__name__:
            raise ModelConfigError(f"{path} holds a {doc.get('model_type')!r}, not a {cls.__name__!r}")
        return cls.config_from_dict(doc["config"], overrides, str(path))

    @classmethod
    def from_pretrained(
        cls: type[M], path: str | Path, device: str | torch.device = "cpu", **overrides: Any
    ) -> M:
        """Build the model from ``config.json`` in ``path`` (and ``overrides``); load its weights strictly."""
        config = cls.load_config(path, **overrides)
        model = cls(config)
        weights = Path(path) / WEIGHTS_NAME
        if not weights.is_file():
            raise ModelConfigError(f"{path} is not a pretrained folder: {WEIGHTS_NAME} is missing")
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
        if missing or unexpected:
            raise ModelConfigError(
                f"{path} does not fit {cls.__name__}: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        return model.to(device)

    @classmethod
    def from_checkpoint(
        cls: type[M], path: str | Path, device: str | torch.device = "cpu", **overrides: Any
    ) -> M:
        """Build the model recorded in a task's Lightning checkpoint and load its weights strictly.

        Raises:
            CheckpointError: the file is not a readable checkpoint, or holds no encoder of this class.

        """
        ckpt = read_checkpoint(path)
        meta = (ckpt.get("spectravlm") or {}).get("encoder")
        if not isinstance(meta, dict) or meta.get("model_type") != cls.__name__:
            held = None if not isinstance(meta, dict) else meta.get("model_type")
            raise CheckpointError(
                f"{path}: holds no {cls.__name__} (checkpoint metadata names {held!r}); it was not written "
                "by a spectravlm task with an encoder"
            )
        config = cls.config_from_dict(meta["config"], overrides, str(path))
        model = cls(config)
        prefix = meta.get("prefix", "")
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{path}: the encoder weights under {prefix!r} do not fit {cls.__name__}: missing "
                f"{sorted(result.missing_keys)[:8]}, unexpected {sorted(result.unexpected_keys)[:8]}"
            )
        return model.to(device)


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
