"""The train task resolves its shards before it builds the model (issue 19 follow-up): a missing
data.root or shard is one line in seconds, not after IF-I-XL and T5-XXL loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lumiere.errors import ConfigError, InputFileError

from training_helpers import REPO_ROOT, compose_config, make_tiny_dataset


class ModelBuilt(AssertionError):
    pass


@pytest.fixture
def model_never_built(monkeypatch):
    """The STUNet stage's constructor raises: a check that runs after the model is built fails the test."""
    from lumiere.training import TextToVideoModule

    def refuse(self, *args, **kwargs):
        raise ModelBuilt("the model was built before the data inputs were checked")

    monkeypatch.setattr(TextToVideoModule, "__init__", refuse)


def tiny_stunet(tmp_path, *overrides: str):
    return compose_config("train", ["experiment=tiny_stunet", f"paths.data_dir={tmp_path / 'data'}",
                                    f"paths.artifacts_dir={tmp_path / 'artifacts'}", f"paths.output_dir={tmp_path / 'run'}",
                                    "logger=csv", "trainer.enable_progress_bar=false", *overrides], tmp_path / "run")


def test_a_missing_data_root_is_one_line_before_the_model_is_built(tmp_path, model_never_built):
    from lumiere.tasks import train

    missing = tmp_path / "no_such_dataset"
    with pytest.raises(ConfigError, match=f"^data.root={missing} is not a folder; point it at the folder holding train/"):
        train(tiny_stunet(tmp_path, f"data.root={missing}"))


def test_a_missing_train_shard_is_one_line_before_the_model_is_built(tmp_path, model_never_built):
    from lumiere.tasks import train

    make_tiny_dataset(tmp_path / "data")
    missing = tmp_path / "data" / "tiny" / "train" / "shard-999999.tar"
    with pytest.raises(InputFileError, match=f"^shard not found: {missing}$"):
        train(tiny_stunet(tmp_path, f"data.train_shards={missing}"))


def test_existing_shards_reach_the_model(tmp_path, model_never_built):
    """The check passes good shards on: the next thing the task does is build the model."""
    from lumiere.tasks import train

    make_tiny_dataset(tmp_path / "data")
    with pytest.raises(Exception, match="the model was built before the data inputs were checked"):  # Hydra wraps it
        train(tiny_stunet(tmp_path))


def test_train_py_exits_with_the_one_line(tmp_path):
    missing = tmp_path / "no_such_dataset"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "experiment=tiny_stunet", f"data.root={missing}",
                           f"hydra.run.dir={tmp_path / 'run'}", f"paths.output_dir={tmp_path / 'run'}",
                           f"paths.log_dir={tmp_path / 'logs'}", f"paths.artifacts_dir={tmp_path / 'artifacts'}",
                           "logger=csv", "cpu_threads=1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PROJECT_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data.root={missing} is not a folder; point it at the folder holding train/ (and val/, test/)"]
