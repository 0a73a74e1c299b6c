"""One training step of a configured STUNet on fake tensors: its memory, without its weights or arithmetic.

The model is built on the ``meta`` device (no weight memory, no initialisation), then given fake
CPU parameters inside a ``FakeTensorMode``; one forward (under the training precision's autocast,
with CUDA's autocast policy, ``lumiere.plan.live_bytes.cuda_autocast_on_cpu``) and one backward of
a mean-square loss then run as on a GPU, with a :class:`~lumiere.plan.live_bytes.LiveBytesCounter`
charging every tensor created. Nothing is computed, so a 4.3B-parameter U-Net on 80 frames at
128x128 takes seconds on a CPU.

The step is the one ``benchmarks/bench_stunet.py`` measures on a GPU (so the two can be compared):
forward of a (B, 3, T, H, W) clip, ``out.float().square().mean().backward()``. Three variants:
``stunet`` (Sec. 3.1), ``per_frame_2d`` (the frozen U-Net on every frame, differentiated with
respect to its input) and ``fixed_resolution`` (the conventional inflation,
``build_fixed_resolution_inflation``). The diffusion objective of real training adds a few
output-sized float32 tensors (tens of MB at the paper's shape), which this step leaves out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets import UNet2DConditionModel
from torch._subclasses.fake_tensor import FakeTensorMode

from lumiere.errors import ConfigError, InputFileError
from lumiere.models import STUNet, build_fixed_resolution_inflation
from lumiere.models.t2i import UNET_PRESETS, unet_text_dim
from lumiere.plan.live_bytes import LiveBytesCounter, cuda_autocast_on_cpu

VARIANTS = ("stunet", "per_frame_2d", "fixed_resolution")
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}

# The planner's shape presets: a U-Net preset plus overrides. IF-I-XL's width: IF stage I's
# levels (the ``if_stage1_paper`` preset) at 704 channels per width multiple and a 2816-wide
# cross-attention, 4.30B parameters, IF-I-XL's published 4.3B (the ``if_stage1_paper`` preset
# itself, at 512, has 2.31B).
SHAPE_PRESETS: dict[str, tuple[str, dict]] = {
    "if_i_xl_width": ("if_stage1_paper", dict(block_out_channels=(704, 1408, 2112, 2816), cross_attention_dim=2816)),
}


@dataclass(frozen=True)
class ModelSpec:
    """Which network: a U-Net preset (``UNET_PRESETS`` or ``SHAPE_PRESETS``) or a config path, the
    variant, config overrides of the U-Net and constructor arguments of the STUNet."""

    source: str = "if_stage1_paper"  # preset name, a U-Net config.json, or a diffusers (IF) folder
    variant: str = "stunet"
    unet_overrides: dict = field(default_factory=dict)
    stunet_kwargs: dict = field(default_factory=dict)
    checkpointing: Any = "none"  # "none" | "all" | a policy of the STUNet's activation_checkpointing argument


@dataclass(frozen=True)
class StepShape:
    batch: int = 1
    frames: int = 80
    resolution: int = 128
    text_tokens: int = 77  # the IF pipeline's T5 length
    text_mask: bool = True  # pass the caption's padding mask (the training module does)


@dataclass
class StepMemory:
    """Bytes of one fake step: peaks over the step's growth (weights and inputs excluded)."""

    peaks: dict  # (grad_scale, cast_scale) -> peak bytes (see LiveBytesCounter)
    forward_peak: int  # peak during the forward
    saved_after_forward: int  # live at the end of the forward: what backward holds on to
    gradient_bytes: int  # trainable parameters' gradients alive at the end


# ----------------------------------------------------------------------------------------------
# Building the network
# ----------------------------------------------------------------------------------------------


def read_part_config(path: Path, part: str, what: str, hint: str = "") -> dict:
    """A model part's config: a config.json, the part's own folder, or a pipeline folder with ``part/``."""
    candidates = [path] if path.suffix == ".json" else [path / "config.json", path / part / "config.json"]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise InputFileError(f"cannot read the {what} config {candidate}: {err}") from err
    raise InputFileError(f"no {what} config at {path}: give {hint}a config.json, or a folder with "
                         f"config.json or {part}/config.json")


def _read_unet_config(path: Path) -> dict:
    return read_part_config(path, "unet", "U-Net",
                            f"a preset name ({sorted({*UNET_PRESETS, *SHAPE_PRESETS})}), ")


def unet_config(spec: ModelSpec) -> dict:
    """The U-Net's constructor config: the preset or file, with ``spec.unet_overrides`` applied."""
    if spec.source in SHAPE_PRESETS:
        base, overrides = SHAPE_PRESETS[spec.source]
        config = {**UNET_PRESETS[base], **overrides}
    elif spec.source in UNET_PRESETS:
        config = dict(UNET_PRESETS[spec.source])
    elif Path(spec.source).suffix == ".json" or Path(spec.source).is_dir():
        config = {k: v for k, v in _read_unet_config(Path(spec.source)).items() if not k.startswith("_")}
    else:
        raise ConfigError(f"--preset {spec.source!r} is neither a preset ({sorted({*UNET_PRESETS, *SHAPE_PRESETS})}) "
                          "nor a U-Net config.json or diffusers folder")
    config.update(spec.unet_overrides)
    return config


def _checkpointing_kwargs(checkpointing: Any) -> dict:
    """STUNet constructor arguments for a checkpointing policy."""
    return {"activation_checkpointing": None if checkpointing == "none" else checkpointing}


def build_meta_network(spec: ModelSpec) -> torch.nn.Module:
    """The network of ``spec`` on the meta device (shapes only; no memory, no initialisation)."""
    if spec.variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {VARIANTS}, got {spec.variant!r}")
    if spec.variant == "per_frame_2d" and spec.checkpointing != "none":
        raise ConfigError("the per-frame 2D U-Net variant has no checkpointing policy here; use --checkpointing none")
    config = unet_config(spec)
    with torch.device("meta"):
        try:
            unet = UNet2DConditionModel.from_config(config)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"invalid U-Net config for {spec.source!r}: {err}") from err
        unet.requires_grad_(False)
        if spec.variant == "per_frame_2d":
            return unet.eval()
        kwargs = {**_checkpointing_kwargs(spec.checkpointing), **spec.stunet_kwargs}
        build = STUNet if spec.variant == "stunet" else build_fixed_resolution_inflation
        try:
            return build(unet, **kwargs)
        except TypeError as err:
            raise ConfigError(f"STUNet does not take these arguments {sorted(kwargs)}: {err}") from err


def frozen_and_trainable(network: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    params = list(network.parameters())
    return [p for p in params if not p.requires_grad], [p for p in params if p.requires_grad]


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------


def check_shape(network: torch.nn.Module, shape: StepShape) -> None:
    if shape.batch < 1 or shape.resolution < 1 or shape.text_tokens < 1:
        raise ConfigError(f"batch, resolution and text tokens must be >= 1, got {shape.batch}, {shape.resolution}, "
                          f"{shape.text_tokens}")
    if isinstance(network, STUNet):
        network.check_num_frames(shape.frames)
    elif shape.frames < 1:
        raise ConfigError(f"a clip needs at least 1 frame, got {shape.frames}")


def run_step(network: torch.nn.Module, shape: StepShape, precision: str, scales=((1.0, 1.0),)) -> StepMemory:
    """One forward + backward of ``network`` on inputs of ``shape``, counted; real or fake tensors alike
    (the inputs are made here, so under a FakeTensorMode they are fake)."""
    dtype = PRECISIONS[precision]
    unet = network if isinstance(network, UNet2DConditionModel) else network.unet
    b, t, s = shape.batch, shape.frames, shape.resolution
    device = next(network.parameters()).device
    text = torch.zeros(b, shape.text_tokens, unet_text_dim(unet), device=device)
    mask = torch.ones(b, shape.text_tokens, dtype=torch.bool, device=device) if shape.text_mask else None
    timestep = torch.zeros(b, dtype=torch.long, device=device)
    # An SSR U-Net (IF stage II) is told the low-res input's noise-augmentation level as class labels;
    # its low-res frames are the extra input channels.
    levels = timestep if unet.class_embedding is not None else None
    if isinstance(network, UNet2DConditionModel):  # per-frame 2D: frames as a batch of images
        inputs = torch.zeros(b * t, unet.config.in_channels, s, s, device=device, requires_grad=True)
        args = (inputs, timestep.repeat_interleave(t), text.repeat_interleave(t, dim=0))
        kwargs = {"encoder_attention_mask": None if mask is None else mask.repeat_interleave(t, dim=0),
                  "class_labels": None if levels is None else levels.repeat_interleave(t)}
    else:
        args = (torch.zeros(b, network.in_channels, t, s, s, device=device), timestep, text)
        kwargs = {"encoder_attention_mask": mask, "class_labels": levels}
    counter = LiveBytesCounter(network.parameters(), scales={(1.0, 1.0), *scales})
    try:
        # CUDA's policy spans backward too: checkpointed blocks re-enter autocast to recompute there
        with counter, cuda_autocast_on_cpu():
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                out = network(*args, **kwargs)
                out = out.sample if hasattr(out, "sample") else out
                loss = out.float().square().mean()
            forward_peak, saved = counter.peak, counter.total_live
            loss.backward()
            del out, loss
        gradient_bytes = counter.live["grad"]
    finally:
        counter.remove_hooks()
    return StepMemory(dict(counter.peaks), forward_peak, saved, gradient_bytes)


def measure_fake_step(spec: ModelSpec, shape: StepShape, precision: str = "bf16-mixed",
                      frozen_dtype: torch.dtype | None = None, scales=((1.0, 1.0),)) -> StepMemory:
    """:func:`run_step` of ``spec``'s network on fake tensors (no weight memory, no arithmetic)."""
    precision = PRECISION_ALIASES.get(precision, precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if frozen_dtype is not None and frozen_dtype != torch.float32 and PRECISIONS[precision] is None:
        raise ConfigError("frozen weights in bf16/fp16 need a mixed precision (bf16-mixed or 16-mixed), "
                          "not 32-true: the float32 activations would meet low-precision weights")
    network = build_meta_network(spec)
    check_shape(network, shape)
    # allow_non_fake_inputs: to_empty reads the meta parameters' shapes (meta tensors hold no data)
    with FakeTensorMode(allow_non_fake_inputs=True):
        network.to_empty(device="cpu")
        if frozen_dtype is not None:
            for param in frozen_and_trainable(network)[0]:
                param.data = param.data.to(frozen_dtype)
        return run_step(network, shape, precision, scales)
