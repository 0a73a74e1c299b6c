"""Evaluate a base model: `python evaluate.py ckpt_path=PATH` (synthetic benchmark, paper Sec. 5.2
stand-in with the App. D.1 vigilance rows) or `python evaluate.py evaluation=ucf101 ckpt_path=PATH
evaluation.ucf101_root=... evaluation.c3d_weights=... evaluation.c3d_mean=...` (Table 1, App. D.2) or
`python evaluate.py evaluation=folder evaluation.real=PATH evaluation.generated=PATH` (FVD of your own clips;
`ckpt_path=PATH evaluation.prompt_file=PATH` instead of `evaluation.generated` samples them).

`python evaluate.py --cfg job` prints the composed config.
"""

import os

# Before torch loads OpenMP: spin-waiting threads on a shared CPU can slow a step 10x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

from lumiere.tasks import evaluate, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    return run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
