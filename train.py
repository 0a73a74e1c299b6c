"""Train a Lumiere stage: `python train.py experiment=demo_stunet [overrides]`.

`python train.py --cfg job` prints the composed config; `--help` lists the config groups.
"""

import os

# Before torch loads OpenMP: spin-waiting threads on a shared CPU can slow a step 10x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

from lumiere.tasks import run_task, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    main()
