"""Applications of the base model (paper Sec. 4): `python apps.py mode=image_to_video ckpt_path=... image=...`.

Modes: image_to_video, inpaint, outpaint, cinemagraph, sdedit, stylize; see conf/apps.yaml.
"""

import os

# Before torch loads OpenMP: spin-waiting threads on a shared CPU can slow a step 10x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

from lumiere.tasks import apps, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="apps")
def main(cfg: DictConfig) -> float | None:
    return run_task(apps, cfg)


if __name__ == "__main__":
    main()
