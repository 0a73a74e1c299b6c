"""Analytic denoisers: exact answers for tests, demos and benchmarks that need no trained network.

`OracleDenoiser` knows the clean sample x_0 and returns the model output a perfect network
would: at x_t it outputs the epsilon (or v) that `lumiere.diffusion.process.predict_x0` maps
back to x_0. Any correct sampler driven by it lands on x_0; a correct loss gives 0 on it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from lumiere.diffusion.process import check_prediction_type, model_output_from_x0
from lumiere.errors import ConfigError


class OracleDenoiser:
    """denoise_fn(x_t, t, cond) whose prediction implies the clean sample x_0 exactly.

    x_0 is `target` (a tensor shaped like x_t) or, with `target_key`, `cond[target_key]`
    (so a sampler that slices conditioning per window hands the oracle the matching slice).
    """

    def __init__(self, alphas_cumprod: Tensor, prediction_type: str = "epsilon", *,
                 target: Tensor | None = None, target_key: str | None = None) -> None:
        if (target is None) == (target_key is None):
            raise ConfigError("OracleDenoiser needs exactly one of target or target_key")
        self.alphas_cumprod = alphas_cumprod
        self.prediction_type = check_prediction_type(prediction_type)
        self.target = target
        self.target_key = target_key
        self.calls = 0  # forwards run so far (tests count batched forwards with it)

    def __call__(self, x_t: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        self.calls += 1
        x0 = cond[self.target_key] if self.target_key is not None else self.target
        return model_output_from_x0(x0.to(x_t), x_t, t, self.alphas_cumprod, self.prediction_type)
