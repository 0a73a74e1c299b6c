"""Classifier-free guidance (Ho & Salimans 2022): caption dropout for training, guided prediction.

Training drops a fraction of captions to the empty prompt, so one network learns both the
conditional and the unconditional prediction. At sampling time

    f_guided = f(x_t, t, uncond) + s * (f(x_t, t, cond) - f(x_t, t, uncond))

computed with one batched forward: [cond; uncond] along the batch (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from lumiere.diffusion.process import split_variance
from lumiere.errors import ConfigError

Denoiser = Callable[[Tensor, Tensor, Mapping[str, Tensor]], Tensor]


def drop_conditions(captions: Sequence[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """Replace each caption by "" with probability p (the unconditional prompt of CFG)."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"caption dropout probability must lie in [0, 1], got {p}")
    draw_device = generator.device if generator is not None else "cpu"
    dropped = torch.rand(len(captions), generator=generator, device=draw_device) < p
    return ["" if drop else caption for caption, drop in zip(captions, dropped.tolist())]


def _stack_pair(key: str, cond_value: Tensor | None, uncond_value: Tensor | None, batch: int) -> Tensor | None:
    """[cond; uncond] along the batch; an unconditional entry of batch 1 is shared by all samples."""
    if cond_value is None and uncond_value is None:
        return None
    if not isinstance(cond_value, Tensor) or not isinstance(uncond_value, Tensor):
        raise ConfigError(f"cond[{key!r}] and uncond[{key!r}] must both be tensors (or both None)")
    if uncond_value.shape[0] == 1 and batch > 1:
        uncond_value = uncond_value.expand(batch, *uncond_value.shape[1:])
    if cond_value.shape != uncond_value.shape:
        raise ConfigError(f"cond[{key!r}] has shape {tuple(cond_value.shape)} but uncond[{key!r}] has "
                          f"{tuple(uncond_value.shape)}; pad both to the same shape")
    return torch.cat([cond_value, uncond_value.to(cond_value.device)], dim=0)


def guided_prediction(
    denoise_fn: Denoiser,
    x_t: Tensor,
    t: Tensor,
    cond: Mapping[str, Tensor],
    uncond: Mapping[str, Tensor] | None = None,
    guidance_scale: float = 1.0,
) -> Tensor:
    """The classifier-free guided model output at (x_t, t).

    `guidance_scale == 1` is the conditional prediction and runs a single conditional forward.
    Otherwise `uncond` must have the same keys as `cond`; its entries may have batch 1.
    For a learned-variance output (2C channels) only the prediction half is guided; the variance
    half is the conditional one.
    """
    if guidance_scale == 1.0:
        return denoise_fn(x_t, t, dict(cond))
    if uncond is None:
        raise ConfigError(f"guidance_scale={guidance_scale} needs an unconditional input (uncond)")
    if set(cond) != set(uncond):
        raise ConfigError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
    batch = x_t.shape[0]
    both = {key: _stack_pair(key, cond[key], uncond[key], batch) for key in cond}
    output = denoise_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), both)
    conditional, unconditional = output[:batch], output[batch:]
    cond_pred, cond_variance = split_variance(conditional, x_t.shape[1])
    uncond_pred, _ = split_variance(unconditional, x_t.shape[1])
    guided = uncond_pred + guidance_scale * (cond_pred - uncond_pred)
    return guided if cond_variance is None else torch.cat([guided, cond_variance], dim=1)
