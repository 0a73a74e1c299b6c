"""Sample clips from a trained base model (and SSR model): `python generate.py ckpt_path=... prompts='[...]'`."""

import os

# Before torch loads OpenMP: spin-waiting threads on a shared CPU can slow a step 10x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

from lumiere.tasks import generate, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> float | None:
    return run_task(generate, cfg)


if __name__ == "__main__":
    main()
