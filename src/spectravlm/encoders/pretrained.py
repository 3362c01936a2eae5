"""``save_pretrained`` / ``from_pretrained`` for every encoder: safetensors weights + JSON config.

A checkpoint directory holds ``config.json`` and ``model.safetensors``. The JSON records the class,
the library version, the constructor config, and the catalogue facts of every sensor the model
accepts (bands with wavelength or polarisation, GSD, units, default statistics), so a checkpoint says
which bands it expects and how their values were scaled.

Loading builds the model from the config (no pickled modules, no code from the checkpoint) and
loads the weights strictly: a missing or unexpected tensor is an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from spectravlm.errors import ModelConfigError
from spectravlm.sensors import get_sensor

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="PretrainedMixin")


def sensor_metadata(sensors: tuple[str, ...]) -> list[dict[str, Any]]:
    """Catalogue facts of ``sensors`` as JSON-ready dicts (one per sensor, bands in product order)."""
    out = []
    for name in sensors:
        s = get_sensor(name)
        bands = []
        for b in s.bands:
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
                    "mean": None if b.stats is None else b.stats.mean,
                    "std": None if b.stats is None else b.stats.std,
                }
            )
        out.append({"name": s.name, "platform": s.platform, "kind": s.kind, "bands": bands})
    return out


class PretrainedMixin(nn.Module):
    """Adds ``save_pretrained``/``from_pretrained`` to an encoder built from a dataclass ``config``.

    Subclasses set :attr:`config_class`, keep the config as ``self.config``, accept it as the only
    constructor argument, and may override :meth:`metadata` to add to the JSON.
    """

    config_class: ClassVar[type]
    config: Any

    def metadata(self) -> dict[str, Any]:
        """Extra JSON facts saved beside the config (default: the sensors' catalogue entries)."""
        sensors = getattr(self.config, "sensors", ())
        return {"sensors": sensor_metadata(tuple(sensors))}

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into directory ``path`` (created)."""
        from spectravlm import __version__

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        doc = {
            "model_type": type(self).__name__,
            "spectravlm_version": __version__,
            "config": asdict(self.config),
            **self.metadata(),
        }
        (path / CONFIG_NAME).write_text(json.dumps(doc, indent=2))
        save_model(self, str(path / WEIGHTS_NAME))
        return path

    @classmethod
    def load_config(cls, path: str | Path) -> Any:
        """Read the config of the checkpoint in ``path`` (checking it is one of this class)."""
        path = Path(path)
        file = path / CONFIG_NAME
        if not file.is_file():
            raise ModelConfigError(f"{path} is not a checkpoint directory: {CONFIG_NAME} is missing")
        doc = json.loads(file.read_text())
        if doc.get("model_type") != cls.__name__:
            raise ModelConfigError(
                f"checkpoint {path} holds a {doc.get('model_type')!r}, not a {cls.__name__!r}"
            )
        return cls.config_class.from_dict(doc["config"])  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls: type[M], path: str | Path, device: str | torch.device = "cpu") -> M:
        """Build the model from ``config.json`` in ``path`` and load its weights strictly."""
        config = cls.load_config(path)
        model = cls(config)
        weights = str(Path(path) / WEIGHTS_NAME)
        missing, unexpected = load_model(model, weights, strict=False, device=str(device))
        if missing or unexpected:
            raise ModelConfigError(
                f"checkpoint {path} does not fit {cls.__name__}: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        return model.to(device)
