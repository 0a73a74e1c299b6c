"""Every experiment config composes with its entry point and resolves (no stale keys, no typos)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from training_helpers import CONFIG_DIR, compose_config

# Experiments for generate.py / evaluate.py; every other experiment is a train.py stage.
ENTRY_POINTS = {"demo_cascade": "generate", "demo_eval": "evaluate"}
EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(experiment, tmp_path):
    entry_point = ENTRY_POINTS.get(experiment, "train")
    cfg = compose_config(entry_point, [f"experiment={experiment}"], tmp_path)
    OmegaConf.resolve(cfg)  # raises on a missing interpolation
    if entry_point == "train":
        assert cfg.model._target_.startswith("lumiere.") and cfg.data._target_.startswith("lumiere.")


def test_demo_stages_share_the_demo_t2is_parameterisation(tmp_path):
    """The STUNet and the style fine-tune start from the demo T2I export: same objective."""
    settings = {name: compose_config("train", [f"experiment={name}"], tmp_path).model.objective.prediction_type
                for name in ("demo_t2i", "demo_stunet", "demo_style_t2i")}
    assert len(set(settings.values())) == 1, settings
