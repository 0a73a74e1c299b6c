"""Checkpoints are data, never code: crafted gadget checkpoints are refused, at every entry point, and nothing runs."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lumiere.errors import InputFileError
from lumiere.training import load_module_from_checkpoint
from lumiere.training.stored_config import UnsafeConfigError, check_stored_model_config

from training_helpers import REPO_ROOT, make_tiny_dataset

# A stage config of the right shape, in which each gadget replaces one part.
STUNET_STAGE = {
    "_target_": "lumiere.training.TextToVideoModule",
    "unet_path": "/nonexistent/unet",
    "text_encoder_path": "/nonexistent/text_encoder",
    "stunet": {"_target_": "lumiere.models.STUNet", "_partial_": True},
    "objective": {"_target_": "lumiere.diffusion.DiffusionObjective"},
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4},
}


class _RunsCode:
    """Unpickling this object touches a file (what a malicious pickle would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _gadget_configs(marker: Path, pickle_file: Path) -> dict[str, dict]:
    """Each a config that would create ``marker`` if anything built it."""
    with open(pickle_file, "wb") as handle:
        pickle.dump(_RunsCode(marker), handle)
    touch = ["-c", f"open({str(marker)!r}, 'w').close()"]
    return {
        "builtins_open": {"_target_": "builtins.open", "_args_": [str(marker), "w"]},
        "builtins_exec_in_stunet": {**STUNET_STAGE, "stunet": {"_target_": "builtins.exec", "_args_": [touch[1]]}},
        "os_system": {**STUNET_STAGE, "objective": {"_target_": "os.system", "_args_": [f"touch {marker}"]}},
        "subprocess_run": {**STUNET_STAGE, "stunet": {"_target_": "subprocess.run", "_args_": [[sys.executable, *touch]]}},
        "torch_load_of_a_pickle": {**STUNET_STAGE, "stunet": {"_target_": "torch.load", "_args_": [str(pickle_file)],
                                                              "weights_only": False}},
        "optimizer_target": {**STUNET_STAGE, "optimizer": {"_target_": "builtins.exec", "_partial_": False,
                                                           "_args_": [touch[1]]}},
        "scheduler_in_a_list": {**STUNET_STAGE, "schedulers": [{"_target_": "os.system", "_args_": [f"touch {marker}"]}]},
        "interpolation": {**STUNET_STAGE, "unet_path": "${oc.env:HOME}"},
    }


def _write_checkpoint(path: Path, model_config: dict) -> Path:
    torch.save({"lumiere": {"model_config": model_config}, "state_dict": {}, "global_step": 0}, path)
    return path


@pytest.fixture
def gadgets(tmp_path):
    marker = tmp_path / "code_ran"
    configs = _gadget_configs(marker, tmp_path / "payload.pkl")
    paths = {name: _write_checkpoint(tmp_path / f"{name}.ckpt", config) for name, config in configs.items()}
    # A checkpoint that is itself a pickle of an object that runs code when loaded.
    torch.save({"lumiere": {"model_config": STUNET_STAGE}, "state_dict": {}, "payload": _RunsCode(marker)},
               tmp_path / "pickled_object.ckpt")
    paths["pickled_object"] = tmp_path / "pickled_object.ckpt"
    return marker, paths


def test_every_gadget_is_refused_through_the_python_api_and_nothing_runs(gadgets):
    marker, paths = gadgets
    for name, path in paths.items():
        with pytest.raises(InputFileError) as error:
            load_module_from_checkpoint(str(path))
        message = str(error.value)
        assert "\n" not in message and str(path) in message, name
        if name != "pickled_object":
            assert isinstance(error.value, UnsafeConfigError), name
    assert not marker.exists(), "a gadget checkpoint ran code"


def test_the_refusal_names_the_offending_key(gadgets):
    _, paths = gadgets
    expectations = {
        "builtins_open": "model_config._target_='builtins.open'",
        "builtins_exec_in_stunet": "model_config.stunet._target_='builtins.exec'",
        "os_system": "model_config.objective._target_='os.system'",
        "torch_load_of_a_pickle": "model_config.stunet._target_='torch.load'",
        "optimizer_target": "model_config.optimizer._target_='builtins.exec'",
        "scheduler_in_a_list": "model_config.schedulers[0]._target_='os.system'",
        "interpolation": "model_config.unet_path is an interpolation",
        "pickled_object": "pickled Python objects",
    }
    for name, fragment in expectations.items():
        with pytest.raises(InputFileError, match=".*") as error:
            load_module_from_checkpoint(str(paths[name]))
        assert fragment in str(error.value), (name, str(error.value))
        assert "weights_only=False" not in str(error.value)  # never suggest the unsafe way out


def test_the_projects_own_model_configs_pass_the_check(tmp_path):
    """Every model config an experiment composes is one the check admits (the allowlist is complete)."""
    from omegaconf import OmegaConf

    from training_helpers import compose_config

    experiments = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))
    checked = 0
    for experiment in experiments:
        cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
        if "model" not in cfg or cfg.model is None or "_target_" not in cfg.model:
            continue
        # resolved, as the train task stores it in the checkpoint
        check_stored_model_config(OmegaConf.to_container(cfg.model, resolve=True), experiment)
        checked += 1
    assert checked >= 10


ENTRY_POINTS = {
    "generate.py ckpt_path": lambda ckpt, out: ["generate.py", f"ckpt_path={ckpt}", f"out_dir={out}", "prompts=[a red circle]"],
    "apps.py ckpt_path": lambda ckpt, out: ["apps.py", "mode=image_to_video", f"ckpt_path={ckpt}", f"out_dir={out}",
                                            "prompt=a red circle", f"image={out.parent / 'frame.png'}"],
    "evaluate.py ckpt_path": lambda ckpt, out: ["evaluate.py", "experiment=demo_eval", f"ckpt_path={ckpt}",
                                                 f"paths.output_dir={out}"],
    "train.py model.base_ckpt_path": lambda ckpt, out: ["train.py", "experiment=tiny_conditional", f"model.base_ckpt_path={ckpt}",
                                                         f"paths.output_dir={out}", f"paths.data_dir={out.parent / 'data'}",
                                                         "logger=none"],
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_refuse_a_gadget_checkpoint_in_one_line_and_run_nothing(tmp_path, gadgets, entry):
    from PIL import Image

    marker, paths = gadgets
    out = tmp_path / "out"
    Image.new("RGB", (16, 16)).save(tmp_path / "frame.png")
    if entry.startswith("train.py"):
        make_tiny_dataset(tmp_path / "data")  # the shards are checked before any model or checkpoint
    for name in ("os_system", "pickled_object"):
        command = [sys.executable, *ENTRY_POINTS[entry](paths[name], out)]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
                                env={**os.environ, "HYDRA_FULL_ERROR": "0"})
        assert result.returncode != 0, (entry, name, result.stdout[-500:])
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert lines and lines[-1].startswith("error: ") and str(paths[name]) in lines[-1], (entry, name, result.stderr[-800:])
        assert "Traceback" not in result.stderr, (entry, name, result.stderr[-800:])
    assert not marker.exists()
