"""Generate the reference pages of the documentation site from the code (run by mkdocs-gen-files).

* ``reference/api/``: one page per module of ``spectravlm`` (rendered by mkdocstrings from the docstrings);
* ``reference/sensors.md``: the sensor catalogue as tables (``spectravlm.sensors``);
* ``reference/configuration.md``: every config class and every option of the tasks and the data module,
  with type, default and the description from the docstring (nothing copied by hand);
* ``notebooks/``: the notebooks of ``notebooks/`` (rendered by mkdocs-jupyter, without executing them);
* ``index.md``: the README, with its links made relative to the site.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _modules() -> list[str]:
    import spectravlm

    names = ["spectravlm"]
    for info in pkgutil.walk_packages(spectravlm.__path__, "spectravlm."):
        if info.name.split(".")[-1].startswith("_"):
            continue
        names.append(info.name)
    return sorted(names)


def api_pages() -> None:
    nav = mkdocs_gen_files.Nav()
    for name in _modules():
        parts = name.split(".")
        path = Path("reference", "api", *parts[1:]) if len(parts) > 1 else Path("reference", "api", "index")
        doc = path.with_suffix(".md")
        nav[tuple(parts[1:]) or ("spectravlm",)] = doc.relative_to("reference/api").as_posix()
        with mkdocs_gen_files.open(doc, "w") as f:
            f.write(f"# `{name}`\n\n::: {name}\n")
    with mkdocs_gen_files.open("reference/api/SUMMARY.md", "w") as f:
        f.writelines(nav.build_literate_nav())


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def sensor_page() -> None:
    from spectravlm.sensors import ACCEPTED_UNITS, SENSORS, UNITS

    lines = [
        "# Sensor catalogue",
        "",
        "Generated from `spectravlm.sensors`: every band the library knows, with the facts the tokenizers and "
        "the encoder use. Statistics are the defaults an encoder starts from (physical units), before a "
        "pretraining run replaces them with the statistics of its stores.",
        "",
        f"Units: {', '.join(f'`{u}`' for u in UNITS)}. Accepted by the encoder: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in ACCEPTED_UNITS.items())
        + ".",
        "",
    ]
    for sensor in SENSORS.values():
        lines += [f"## `{sensor.name}`", "", f"{sensor.description} ({sensor.platform}, {sensor.kind}).", ""]
        lines += [
            "| band | role | wavelength (nm) | bandwidth (nm) | frequency (GHz) | polarisation | GSD (m) | unit |"
            " mean | std | statistics source |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for b in sensor.bands:
            st = b.stats
            lines.append(
                "| "
                + " | ".join(
                    _cell(v)
                    for v in (
                        f"`{b.name}`",
                        b.description,
                        b.wavelength_nm,
                        b.bandwidth_nm,
                        b.frequency_ghz,
                        b.polarisation,
                        b.gsd_m,
                        b.units,
                        None if st is None else f"{st.mean:.4g}",
                        None if st is None else f"{st.std:.4g}",
                        None if st is None else st.source,
                    )
                )
                + " |"
            )
        if sensor.aliases:
            lines += ["", "Other spellings: " + ", ".join(f"`{a}` = `{c}`" for a, c in sorted(sensor.aliases.items()))]
        lines.append("")
    with mkdocs_gen_files.open("reference/sensors.md", "w") as f:
        f.write("\n".join(lines))


def _arg_docs(obj: Any) -> dict[str, str]:
    """``name -> description`` from the ``Args:`` section of a Google-style docstring."""
    doc = inspect.getdoc(obj) or ""
    m = re.search(r"^Args:\n(.*?)(?:\n\S|\Z)", doc, flags=re.S | re.M)
    out: dict[str, str] = {}
    if not m:
        return out
    current = None
    for line in m.group(1).splitlines():
        head = re.match(r"^    (\w+): (.*)$", line)
        if head:
            current = head.group(1)
            out[current] = head.group(2)
        elif current and line.startswith("        "):
            out[current] += " " + line.strip()
    return out


def _signature_table(cls: Any) -> list[str]:
    docs = _arg_docs(cls) or _arg_docs(cls.__init__)
    rows = ["| option | type | default | what |", "|---|---|---|---|"]
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "args", "kwargs"):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", p.annotation)
        default = "(required)" if p.default is inspect.Parameter.empty else repr(p.default)
        rows.append(f"| `{name}` | `{_cell(ann)}` | `{_cell(default)}` | {_cell(docs.get(name, ''))} |")
    return rows


def _dataclass_table(cls: Any) -> list[str]:
    source = inspect.getsource(cls)
    comments = dict(re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]*#\s*(.*)$", source, flags=re.M))
    rows = ["| field | type | default | what |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append(f"| `{f.name}` | `{_cell(f.type)}` | `{_cell(default)}` | {_cell(comments.get(f.name, ''))} |")
    return rows


CONFIG_CLASSES = (
    "spectravlm.encoders.spectral.SpectralEncoderConfig",
    "spectravlm.encoders.pseudo_rgb.PseudoRGBEncoderConfig",
)
OPTION_CLASSES = (
    "spectravlm.data.datamodule.CubeDataModule",
    "spectravlm.tasks.pretrain.PretrainTask",
    "spectravlm.tasks.regression.RegressionTask",
    "spectravlm.tasks.points.PointsTask",
    "spectravlm.tasks.vlm.VLMTask",
)


def _load(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def configuration_page() -> None:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the code: the options a YAML config (or the command line, `--section.option`) can set. "
        "`data:` configures the data module; `model:` names a task (`class_path`) and its `init_args`; "
        "`trainer:` is Lightning's `Trainer`; `run_dir` is the run's folder. `bands`, `window_size` and `seed` "
        "of a task come from the `data` section when the task declares them.",
        "",
    ]
    for path in OPTION_CLASSES:
        cls = _load(path)
        if cls is None:
            continue
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0]
        lines += [f"## `{cls.__name__}`", "", f"`{path}`: {summary}", "", *_signature_table(cls), ""]
    for path in CONFIG_CLASSES:
        cls = _load(path)
        if cls is None:
            continue
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0]
        lines += [f"## `{cls.__name__}`", "", f"`{path}`: {summary}", "", *_dataclass_table(cls), ""]
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    lines += ["## Shipped configs", "", "| file | first comment line |", "|---|---|"]
    for c in configs:
        first = next((ln.lstrip("# ").strip() for ln in c.read_text().splitlines() if ln.startswith("#")), "")
        lines.append(f"| `configs/{c.name}` | {_cell(first)} |")
    with mkdocs_gen_files.open("reference/configuration.md", "w") as f:
        f.write("\n".join(lines) + "\n")


def notebooks() -> None:
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        with mkdocs_gen_files.open(f"notebooks/{nb.name}", "w") as f:
            f.write(nb.read_text())


def index_page() -> None:
    readme = (ROOT / "README.md").read_text()
    readme = re.sub(r"\]\(docs/([^)]+)\)", r"](\1)", readme)
    readme = re.sub(r"\]\((benchmarks/[^)]+|notebooks/[^)]*|configs/[^)]*)\)", r"](\1){: .external }", readme)
    readme = re.sub(r"\[([^\]]+)\]\(((?:benchmarks|notebooks|configs)/[^)]*)\)\{: \.external \}", r"`\2`", readme)
    with mkdocs_gen_files.open("index.md", "w") as f:
        f.write(readme)


api_pages()
sensor_page()
configuration_page()
notebooks()
index_page()
