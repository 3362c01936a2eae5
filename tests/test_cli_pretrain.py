"""`spectravlm fit|...|export`: the configs parse, values are linked once, errors are clear."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spectravlm.cli import main
from spectravlm.cli.train import lightning_cli
from spectravlm.data.demo import write_demo_store

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "demo.zarr"
    write_demo_store(path, size=128, seed=0)
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """One thread for these small models (see tests/tasks/conftest.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _instantiate(*args: str):
    """Parse and instantiate (no run) with the trainer forced onto the CPU."""
    return lightning_cli(list(args), run=False)


def test_usage_lists_training_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "spectravlm {fit,validate,test,predict} --config" in out and "spectravlm export" in out
    assert main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err


def test_demo_config_links_bands_window_and_seed_from_the_data(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _instantiate("--config", str(CONFIGS / "pretrain_demo.yaml"), f"--data.stores=[{store}]")
    task, dm = cli.model, cli.datamodule
    assert task.bands == {
        "s2": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
        "s1": ("VV", "VH"),
    }
    assert task.window_size == dm.window_size == 64 and task.hparams.seed == dm.seed
    assert task.encoder.config.dim == 192 and task.encoder.config.patch_size == 16  # tiny, patch 16
    assert type(cli.trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
    assert [type(lg).__name__ for lg in cli.trainer.loggers] == ["TensorBoardLogger", "CSVLogger"]
    # a band subset named once, in data.groups, reaches the model
    cli = _instantiate(
        "--config", str(CONFIGS / "pretrain_demo.yaml"), f"--data.stores=[{store}]",
        "--data.groups={s2: [B04, B03, B02, B08], s1: [VV]}", "--data.window_size=32",
    )  # fmt: skip
    assert (
        cli.model.bands == {"s2": ("B04", "B03", "B02", "B08"), "s1": ("VV",)} and cli.model.window_size == 32
    )


@pytest.mark.parametrize("overlay", [None, "trainer_ddp.yaml", "trainer_fsdp.yaml"])
def test_gpu_configs_parse(store, overlay, capsys):
    args = ["fit", "--config", str(CONFIGS / "pretrain_s1s2_base.yaml")]
    if overlay:
        args += ["--config", str(CONFIGS / overlay)]
    with pytest.raises(SystemExit) as exit_:
        lightning_cli([*args, f"--data.stores=[{store}]", "--print_config"])
    assert exit_.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["trainer"]["accelerator"] == "gpu"
    assert (
        cfg["model"]["init_args"]["encoder"] == "base" and cfg["model"]["init_args"]["contrastive_weight"] > 0
    )
    strategy = cfg["trainer"].get("strategy")
    if overlay == "trainer_ddp.yaml":
        assert strategy == "ddp" and cfg["trainer"]["devices"] == -1
    if overlay == "trainer_fsdp.yaml":
        assert strategy["class_path"].endswith("FSDPStrategy")
        assert "spectravlm.encoders.blocks.Block" in strategy["init_args"]["auto_wrap_policy"]


def test_bad_configs_give_clear_errors(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["fit", "--config", str(CONFIGS / "pretrain_demo.yaml"), f"--data.stores=[{store}]"]
    # library errors are one line, not after the usage text
    assert main([*base, "--data.groups={s2: [B02, B01], s1: null}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "band 'B01' is not in the store" in err and len(err.splitlines()) == 1 and "usage" not in err
    assert main([*base[:3], "--data.stores=[nowhere.zarr]"]) == 1
    err = capsys.readouterr().err.strip()
    assert "nowhere.zarr is not a cube store" in err and len(err.splitlines()) == 1
    assert main([*base, "--model.init_args.mask_ratio=1.0"]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("mask_ratio must be in [0, 1) (the share of tokens hidden from the encoder), got 1.0")
    )
    assert (
        main([*base, "--model.init_args.mask_strategy=sensor", "--model.init_args.contrastive_weight=0.1"])
        == 1
    )
    assert "hides one of them in every sample" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err
