"""Which STUNet blocks recompute their activations in backward (activation checkpointing), per level.

Not in the paper: a memory-for-compute trade for long clips at large widths (issue 21); the paper's
model trains without it, and ``None`` / ``"none"`` is the default. A recomputed block keeps only
its input for backward and runs its forward a second time there, so the gradients are the same
(``torch.utils.checkpoint`` with ``use_reentrant=False``, which also passes gradients through the
frozen layers to the trainable temporal blocks before them although no frozen weight needs one).

A policy names, per U-Net level, whether to recompute

- ``spatial``: the frozen pre-trained layers (each ResNet block with its attention, the spatial
  down/up-samplers; at the coarsest level also the mid block);
- ``temporal``: the new temporal modules (each layer's inflation blocks, the temporal
  down/up-samplers; at the coarsest level also the stacked temporal attention after the mid block).

Given as a name, ``"none"``, ``"spatial"``, ``"temporal"`` or ``"all"`` (both, every level), or a
mapping ``{spatial: levels, temporal: levels}`` where levels is ``"all"``, ``"none"`` or a list of
level indices (0 the finest; the up block that works at a level counts as that level). Where both
parts of one layer are recomputed they form one unit, so only the layer's input is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from lumiere.errors import ConfigError

LevelSpec = Sequence[int] | str | None  # "all", "none", a list of level indices, or None for the caller's default
POLICY_NAMES = ("none", "spatial", "temporal", "all")
CheckpointingSpec = str | Mapping[str, LevelSpec] | None


def resolve_levels(spec: LevelSpec, default: Sequence[int], num_levels: int, name: str) -> tuple[int, ...]:
    """A level spec ("all", "none", indices, or None for ``default``) as sorted level indices, checked against the U-Net."""
    if spec is None:
        return tuple(default)
    if isinstance(spec, str):
        if spec == "all":
            return tuple(range(num_levels))
        if spec == "none":
            return ()
        raise ConfigError(f"{name} must be 'all', 'none', or a list of level indices, got {spec!r}")
    levels = tuple(sorted({int(i) for i in spec}))
    bad = [i for i in levels if not 0 <= i < num_levels]
    if bad:
        raise ConfigError(f"{name}: levels {bad} out of range for a U-Net with {num_levels} levels (0..{num_levels - 1})")
    return levels


@dataclass(frozen=True)
class CheckpointPolicy:
    """The levels whose frozen spatial layers / temporal modules are recomputed in backward."""

    spatial: frozenset[int] = frozenset()
    temporal: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, spec: CheckpointingSpec, num_levels: int) -> CheckpointPolicy:
        """From a name in POLICY_NAMES, a {spatial:, temporal:} mapping, or None (the paper: nothing recomputed)."""
        every = frozenset(range(num_levels))
        if spec is None:
            return cls()
        if isinstance(spec, str):
            if spec not in POLICY_NAMES:
                raise ConfigError(f"activation_checkpointing must be one of {POLICY_NAMES} or a mapping "
                                  f"{{spatial: levels, temporal: levels}}, got {spec!r}")
            return cls(spatial=every if spec in ("spatial", "all") else frozenset(),
                       temporal=every if spec in ("temporal", "all") else frozenset())
        if not isinstance(spec, Mapping):
            raise ConfigError(f"activation_checkpointing must be a name {POLICY_NAMES} or a mapping, got {type(spec).__name__}")
        unknown = sorted(set(spec) - {"spatial", "temporal"})
        if unknown:
            raise ConfigError(f"activation_checkpointing: unknown keys {unknown}; use 'spatial' and/or 'temporal' "
                              "(each 'all', 'none' or a list of levels)")
        return cls(
            spatial=frozenset(resolve_levels(spec.get("spatial", "none"), (), num_levels, "activation_checkpointing.spatial")),
            temporal=frozenset(resolve_levels(spec.get("temporal", "none"), (), num_levels, "activation_checkpointing.temporal")),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.spatial or self.temporal)

    def run(self, level: int, spatial: Callable[[torch.Tensor], torch.Tensor], temporal: Callable[[torch.Tensor], torch.Tensor],
            x: torch.Tensor) -> torch.Tensor:
        """``temporal(spatial(x))`` at ``level``, recomputing in backward the parts this policy names.

        The callables must not depend on loop variables bound later (use functools.partial): a
        recomputed part is called again during backward."""
        recompute_spatial, recompute_temporal = level in self.spatial, level in self.temporal
        if recompute_spatial and recompute_temporal:
            return recomputed(_compose, spatial, temporal, x)
        x = recomputed(spatial, x) if recompute_spatial else spatial(x)
        return recomputed(temporal, x) if recompute_temporal else temporal(x)


def _compose(spatial: Callable, temporal: Callable, x: torch.Tensor) -> torch.Tensor:
    return temporal(spatial(x))


def recomputed(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, its activations recomputed in backward instead of kept (only when gradients are recorded)."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
