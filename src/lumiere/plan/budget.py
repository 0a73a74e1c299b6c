"""The memory plan of one training configuration per GPU, and the largest batch and clip that fit a card.

Per GPU, with ``W`` the FSDP world size (1: one device or DDP, where nothing is sharded):

- resident between steps: frozen T2I weights (float32 as the training module keeps them, or
  ``frozen_dtype``), the trainable temporal weights (float32), AdamW's two float32 moments and the
  EMA's float32 copy of every trainable weight. FULL_SHARD FSDP shards all four over ``W``
  (``lumiere.training.ema`` keeps each rank's shard of the EMA);
- one step (measured on fake tensors, :mod:`lumiere.plan.fake_step`): activations kept for
  backward, temporaries, activation gradients, autocast's bf16 copies of the weights and the
  trainable weights' float32 gradients. With ``W > 1`` the gradients count ``1/W`` (reduce-scattered
  per unit as backward goes) and autocast's weight copies are replaced by FSDP's gathered weights:
  ``trainer=fsdp`` keeps the frozen U-Net in the root unit, which stays gathered whole (in the
  mixed-precision parameter dtype) through forward and backward, plus two temporal units in
  flight (the current one and the prefetched one);
- the optimizer step after backward: the gradients and one float32 temporary per trainable
  weight (the foreach AdamW's intermediate), when the activations are already freed;
- overhead, stated and not measured: ``CUDA_CONTEXT_BYTES`` outside torch's allocator (CUDA
  context, cuBLAS / cuDNN handles) and ``ALLOCATOR_SLACK`` of the step's memory for the caching
  allocator's fragmentation (``torch.cuda.max_memory_reserved`` over ``max_memory_allocated``;
  ``make bench-gpu`` measures it).

- the frozen text encoder (``text_encoder_params``; 0 with cached text embeddings,
  ``model.text_cache``) in ``frozen_dtype``, sharded over ``W`` and, under FSDP, gathered with the
  root unit it sits in. Its forward (no gradients, one caption of 77 tokens per clip) is not counted.

total = resident + max(step, optimizer step) + overhead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lumiere.errors import ConfigError
from lumiere.plan.fake_step import ModelSpec, StepMemory, StepShape, build_meta_network, frozen_and_trainable, measure_fake_step

GiB = 2**30
FLOAT32_BYTES = 4
OPTIMIZER_STATES = 2  # AdamW: exp_avg and exp_avg_sq, float32, per trainable weight
CUDA_CONTEXT_BYTES = int(0.75 * GiB)  # typical CUDA context + library handles on a Hopper card
ALLOCATOR_SLACK = 0.05  # caching-allocator fragmentation, a fraction of the step's memory
DEFAULT_CARDS_GIB = (40, 80, 141)  # A100-40GB, A100/H100-80GB, H200


@dataclass(frozen=True)
class TrainingSetup:
    precision: str = "bf16-mixed"
    fsdp_world_size: int = 1
    frozen_dtype: torch.dtype | None = None  # None: float32, as the training module keeps the T2I weights
    ema: bool = True
    text_encoder_params: int = 0  # the frozen text encoder on the GPU; 0: cached text embeddings


@dataclass
class ParameterCounts:
    frozen: int
    trainable: int
    frozen_dtype: torch.dtype
    largest_unit: int  # parameters of the largest trainable temporal module (an FSDP unit of trainer=fsdp)


@dataclass
class MemoryPlan:
    """Bytes per GPU for one configuration (see the module doc for what each line holds)."""

    shape: StepShape
    setup: TrainingSetup
    checkpointing: object
    params: ParameterCounts
    lines: dict = field(default_factory=dict)  # name -> bytes, in report order
    step: StepMemory | None = None

    @property
    def total(self) -> int:
        return self.lines["total"]

    def gib(self, name: str) -> float:
        return self.lines[name] / GiB


def count_parameters(network: torch.nn.Module, setup: TrainingSetup) -> ParameterCounts:
    frozen, trainable = frozen_and_trainable(network)
    temporal_units = [m for m in network.modules() if type(m).__name__ in
                      ("FactorizedSpaceTimeConvBlock", "TemporalAttentionBlock", "TemporalDownsample", "TemporalUpsample")]
    largest = max((sum(p.numel() for p in m.parameters()) for m in temporal_units), default=0)
    return ParameterCounts(
        frozen=sum(p.numel() for p in frozen),
        trainable=sum(p.numel() for p in trainable),
        frozen_dtype=setup.frozen_dtype or torch.float32,
        largest_unit=largest,
    )


def _step_scales(setup: TrainingSetup) -> tuple[float, float]:
    world = setup.fsdp_world_size
    return (1.0, 1.0) if world == 1 else (1.0 / world, 0.0)


def assemble_plan(params: ParameterCounts, setup: TrainingSetup, step_peak: int, saved_after_forward: int) -> dict:
    """The plan's lines (bytes) from the parameter counts and the fake step's peak at ``setup``'s scales."""
    world = setup.fsdp_world_size
    frozen_bytes = params.frozen * params.frozen_dtype.itemsize
    trainable_bytes = params.trainable * FLOAT32_BYTES
    lines = {
        "frozen parameters": frozen_bytes // world,
        "text encoder": setup.text_encoder_params * params.frozen_dtype.itemsize // world,
        "trainable parameters": trainable_bytes // world,
        "gradients": trainable_bytes // world,
        "optimizer state": OPTIMIZER_STATES * trainable_bytes // world,
        "EMA": trainable_bytes // world if setup.ema else 0,
    }
    step_bytes = step_peak
    if world > 1:  # the root unit (frozen U-Net, text encoder) gathered whole, two temporal units in flight
        gathered_dtype_bytes = 2 if setup.precision != "32-true" else FLOAT32_BYTES
        step_bytes += (params.frozen + setup.text_encoder_params + 2 * params.largest_unit) * gathered_dtype_bytes
    lines["step (activations, their gradients, weight copies, gradients)"] = step_bytes
    lines["activations kept for backward"] = saved_after_forward
    optimizer_step = lines["gradients"] + trainable_bytes // world  # one float32 temporary per weight
    resident = sum(lines[k] for k in ("frozen parameters", "text encoder", "trainable parameters", "optimizer state",
                                      "EMA"))
    dynamic = max(step_bytes, optimizer_step)
    lines["overhead (CUDA context, allocator slack)"] = CUDA_CONTEXT_BYTES + int(ALLOCATOR_SLACK * dynamic)
    lines["total"] = resident + dynamic + lines["overhead (CUDA context, allocator slack)"]
    return lines


def _check_setup(setup: TrainingSetup) -> None:
    if setup.fsdp_world_size < 1:
        raise ConfigError(f"--fsdp-world-size must be >= 1, got {setup.fsdp_world_size}")


def plan_memory(spec: ModelSpec, shape: StepShape, setup: TrainingSetup = TrainingSetup()) -> MemoryPlan:
    """The per-GPU memory plan of one training step of ``spec`` at ``shape`` under ``setup``."""
    _check_setup(setup)
    params = count_parameters(build_meta_network(spec), setup)
    scales = _step_scales(setup)
    step = measure_fake_step(spec, shape, setup.precision, setup.frozen_dtype, scales=(scales,))
    lines = assemble_plan(params, setup, step.peaks[scales], step.saved_after_forward)
    return MemoryPlan(shape, setup, spec.checkpointing, params, lines, step)


# ----------------------------------------------------------------------------------------------
# What fits a card
# ----------------------------------------------------------------------------------------------


@dataclass
class Fit:
    card_gib: float
    largest_frames: int  # at the plan's batch; 0 if not even the shortest clip fits
    largest_batch: int  # at the plan's frame count; 0 if not even one clip fits


def _largest(total, first: int, step: int, capacity: int, limit: int) -> int:
    """Largest n = first + k*step <= limit with total(n) <= capacity, for total nondecreasing in n."""
    if total(first) > capacity:
        return 0
    low, high = 0, (limit - first) // step  # in steps; total(first + low*step) fits
    while low < high:
        mid = (low + high + 1) // 2
        if total(first + mid * step) <= capacity:
            low = mid
        else:
            high = mid - 1
    return first + low * step


def largest_fitting(spec: ModelSpec, plan: MemoryPlan, cards_gib=DEFAULT_CARDS_GIB, max_frames: int = 100_000,
                    max_batch: int = 100_000) -> list[Fit]:
    """For each card: the longest clip at the plan's batch and the largest batch at its frame count.

    The step's memory is linear in the clip's frames and in the batch (every level holds B x T_level
    frames; attention is memory-efficient, so linear in its sequence too): each line is fitted
    through the plan's own step and one more fake step (``benchmarks/plan_memory.py`` reports how
    far a line through two points is from the fake steps between them)."""
    setup, shape = plan.setup, plan.shape
    scales = _step_scales(setup)
    network = build_meta_network(spec)
    n = getattr(network, "temporal_factor", 1)
    shortest = 2 * n if n > 1 else 1

    def step_at(batch: int, frames: int) -> StepMemory:
        other = StepShape(batch, frames, shape.resolution, shape.text_tokens, shape.text_mask)
        return measure_fake_step(spec, other, setup.precision, setup.frozen_dtype, scales=(scales,))

    def line(x0: int, m0: StepMemory, x1: int, m1: StepMemory):
        def total(x: int) -> int:
            peak = m0.peaks[scales] + (m1.peaks[scales] - m0.peaks[scales]) * (x - x0) / (x1 - x0)
            saved = m0.saved_after_forward + (m1.saved_after_forward - m0.saved_after_forward) * (x - x0) / (x1 - x0)
            return assemble_plan(plan.params, setup, int(peak), int(saved))["total"]
        return total

    other_frames = shortest if shape.frames != shortest else shortest + 2 * n
    by_frames = line(shape.frames, plan.step, other_frames, step_at(shape.batch, other_frames))
    by_batch = line(shape.batch, plan.step, shape.batch + 1, step_at(shape.batch + 1, shape.frames))
    fits = []
    for card in cards_gib:
        capacity = int(card * GiB)
        fits.append(Fit(card, _largest(by_frames, shortest, n, capacity, max_frames),
                        _largest(by_batch, 1, 1, capacity, max_batch)))
    return fits
