"""Memory planning for training at the paper's scale on a CPU (issue 21, item 1).

``python -m lumiere.plan`` builds a configured STUNet without its weights, runs one training step on
fake tensors and reports, per GPU, the parameters, gradients, optimizer and EMA state, the step's
activations, overhead and total, then the largest batch and clip that fit a card.

- :mod:`lumiere.plan.live_bytes`: the live-bytes counter and CUDA's autocast policy on the CPU;
- :mod:`lumiere.plan.fake_step`: the network on the meta device and one fake step;
- :mod:`lumiere.plan.budget`: the per-GPU plan (sharding, optimizer, EMA, overhead) and the fit search.
"""

from lumiere.plan.budget import Fit, MemoryPlan, TrainingSetup, largest_fitting, plan_memory
from lumiere.plan.fake_step import SHAPE_PRESETS, ModelSpec, StepShape, measure_fake_step, run_step

__all__ = [
    "SHAPE_PRESETS",
    "Fit",
    "MemoryPlan",
    "ModelSpec",
    "StepShape",
    "TrainingSetup",
    "largest_fitting",
    "measure_fake_step",
    "plan_memory",
    "run_step",
]
