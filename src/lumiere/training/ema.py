"""Exponential moving average of the trainable weights, swapped in for validation and sampling.

Only trainable parameters are tracked: the frozen T2I weights never change, so averaging them
would double their memory for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ExponentialMovingAverage:
    """EMA of named parameters, with the usual warm-up `min(decay, (1 + n) / (10 + n))`."""

    def __init__(self, named_parameters: list[tuple[str, nn.Parameter]], decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.parameters = dict(named_parameters)
        self.shadow = {name: p.detach().clone() for name, p in self.parameters.items()}
        self.num_updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        self.num_updates += 1
        for name, param in self.parameters.items():
            shadow = self.shadow[name]
            if shadow.device != param.device:
                shadow = self.shadow[name] = shadow.to(param.device)
            shadow.lerp_(param.detach().to(shadow.dtype), 1.0 - decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the model; restore the raw ones after."""
        backup = {name: p.detach().clone() for name, p in self.parameters.items()}
        try:
            with torch.no_grad():
                for name, param in self.parameters.items():
                    param.copy_(self.shadow[name])
            yield
        finally:
            with torch.no_grad():
                for name, param in self.parameters.items():
                    param.copy_(backup[name])

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for name, param in self.parameters.items():
            param.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        unexpected = set(state["shadow"]) - set(self.shadow)
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for name, value in state["shadow"].items():
            self.shadow[name] = value.to(self.parameters[name].device, self.parameters[name].dtype)
