"""Optional "replacement" of the known region while sampling (RePaint-style, Lugmayr et al. 2022).

The conditional model of Sec. 4.2 learns to copy the known pixels of C by itself; that is what
the paper relies on and what the tests measure. For an exact copy, or to condition a model that
was never fine-tuned (the unconditional base), the sampler can also be told the known region:
at every step the denoiser's implied clean sample x_0 is replaced by C where M = 1,

    x_0' = M * C + (1 - M) * x_0(x_t, t),

and handed back in the model's own parameterisation (epsilon or v), so every scheduler and
classifier-free guidance work unchanged. Along a deterministic DDIM path this keeps the known
region on the noised trajectory of C, and the last step returns C there exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lumiere.diffusion import model_output_from_x0, predict_x0, split_variance

Denoiser = Callable[[Tensor, Tensor, Mapping[str, Tensor]], Tensor]


def replace_known_region(denoise_fn: Denoiser, alphas_cumprod: Tensor, prediction_type: str) -> Denoiser:
    """Wrap a denoiser so that its implied x_0 equals `cond["cond_video"]` where `cond["mask"]` is 1.

    The wrapped denoiser reads C and M from `cond` (so classifier-free guidance, which batches
    cond and uncond together, needs nothing special). A learned-variance output keeps its
    variance half.
    """

    def denoise(x_t: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        output = denoise_fn(x_t, t, cond)
        known, mask = cond.get("cond_video"), cond.get("mask")
        if known is None or mask is None:
            return output
        prediction, variance = split_variance(output, x_t.shape[1])
        x0 = predict_x0(prediction, x_t, t, alphas_cumprod, prediction_type)
        mask = mask.to(x0.dtype)
        x0 = mask * known.to(x0.dtype) + (1.0 - mask) * x0
        prediction = model_output_from_x0(x0, x_t, t, alphas_cumprod, prediction_type).to(output.dtype)
        return prediction if variance is None else torch.cat([prediction, variance], dim=1)

    return denoise


def paste_known_region(video: Tensor, cond_video: Tensor, mask: Tensor) -> Tensor:
    """M * C + (1 - M) * video: the final composite of a replacement-sampled clip."""
    mask = mask.to(video.dtype)
    return mask * cond_video.to(video.dtype) + (1.0 - mask) * video
