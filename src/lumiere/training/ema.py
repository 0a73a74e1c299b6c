"""Exponential moving average of the trainable weights, swapped in for validation and sampling.

Only trainable parameters are tracked: the frozen T2I weights never change, so averaging them
would double their memory for nothing.

Under sharded FSDP (torch `FullyShardedDataParallel` with `use_orig_params=True`, which is what
Lightning's `FSDPStrategy` wraps with) every original parameter is, outside forward and backward,
a 1-D view of the slice of its flattened values that this rank's shard of the unit's flat
parameter holds (empty when the slice lies on other ranks). `shard_for_fsdp` cuts the EMA's
full-shape copies down to the same slices, so each rank averages its own shard element by element
(no communication, memory / world size) and swapping the EMA in is a local copy; FSDP's
all-gathers then run the forward with the averaged weights. Saving goes through FSDP's own
state dict with the EMA swapped in: "full" gathers one full-shape copy on rank 0 (the same
`checkpoint["ema"]` as a single-device run), "sharded" gives FSDP's sharded tensors, so the EMA
is kept exactly as the model weights are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lumiere.errors import ConfigError

STATE_DICT_TYPES = ("full", "sharded")


class ExponentialMovingAverage:
    """EMA of named parameters, with the usual warm-up `min(decay, (1 + n) / (10 + n))`."""

    def __init__(self, named_parameters: list[tuple[str, nn.Parameter]], decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.parameters = dict(named_parameters)
        self.shadow = {name: p.detach().clone() for name, p in self.parameters.items()}
        self.num_updates = 0
        self._swapped_in = False
        # Set by `shard_for_fsdp`: the FSDP root module, its state-dict type, and for each sharded
        # parameter its full shape and the [start, stop) range of its flattened values held here.
        self._fsdp_root: nn.Module | None = None
        self._state_dict_type = "full"
        self._full_shapes: dict[str, torch.Size] = {}
        self._shard_ranges: dict[str, tuple[int, int]] = {}

    @property
    def is_sharded(self) -> bool:
        return self._fsdp_root is not None

    # ------------------------------------------------------------------ FSDP
    @torch.no_grad()
    def shard_for_fsdp(self, root: nn.Module, state_dict_type: str = "full") -> None:
        """Keep only this rank's shard of every parameter `root` (the outermost FSDP module) shards.

        Call once, right after wrapping and before the first update: the shadow still holds the
        full-shape values it was made with. `state_dict_type` ("full" | "sharded") must be the
        strategy's, so the EMA is saved in the same form as the model."""
        if state_dict_type not in STATE_DICT_TYPES:
            raise ConfigError(f"state_dict_type must be 'full' or 'sharded', got {state_dict_type!r}")
        if self.num_updates:
            raise RuntimeError("shard the EMA before its first update (the shards are cut from the initial weights)")
        ranges = local_shard_ranges(root)
        root_parameters = {id(p) for p in root.parameters()}
        for name, param in self.parameters.items():
            if id(param) in ranges:
                start, stop = ranges[id(param)]
                full = self.shadow[name]
                self._full_shapes[name] = full.shape
                self._shard_ranges[name] = (start, stop)
                self.shadow[name] = full.reshape(-1)[start:stop].clone()
                if self.shadow[name].shape != param.shape:
                    raise RuntimeError(f"{name}: FSDP holds {tuple(param.shape)} elements here, the EMA shard is "
                                       f"{tuple(self.shadow[name].shape)}; shard the EMA while the parameters are sharded")
            elif id(param) not in root_parameters:
                raise ConfigError(f"the EMA tracks {name}, which the FSDP model no longer holds: the EMA needs "
                                  "trainer.strategy.use_orig_params=true")
        self._fsdp_root = root
        self._state_dict_type = state_dict_type

    def _fsdp_state_dict_context(self):
        from torch.distributed.fsdp import FullStateDictConfig, ShardedStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if self._state_dict_type == "sharded":
            return FSDP.state_dict_type(self._fsdp_root, StateDictType.SHARDED_STATE_DICT,
                                        ShardedStateDictConfig(offload_to_cpu=True))
        # Offloading a gather that is already on the CPU segfaults (torch 2.13 CPU FSDP clones freed memory).
        offload = getattr(self._fsdp_root, "compute_device", torch.device("cpu")).type != "cpu"
        return FSDP.state_dict_type(self._fsdp_root, StateDictType.FULL_STATE_DICT,
                                    FullStateDictConfig(offload_to_cpu=offload, rank0_only=True))

    @torch.no_grad()
    def _fsdp_shadow_state(self) -> dict:
        """The EMA as FSDP writes the model: full tensors on rank 0 (none elsewhere) or sharded tensors.

        A collective: every rank must call it (Lightning saves checkpoints on every rank)."""
        with self.swapped_in(), self._fsdp_state_dict_context():
            model_state = self._fsdp_root.state_dict()
        shadow = {name: model_state[name] for name in self.parameters if name in model_state}
        if model_state and len(shadow) != len(self.parameters):
            missing = sorted(set(self.parameters) - set(shadow))
            raise RuntimeError(f"FSDP's state dict lacks EMA parameters, e.g. {missing[:3]}")
        return shadow

    @torch.no_grad()
    def _load_fsdp_sharded(self, shadow: dict) -> None:
        """Load sharded tensors (FSDP's layout, any world size) into this rank's flat-shard slices.

        Through the model: the averaged values are loaded into the parameters, copied from there,
        and the raw weights put back. A collective, like loading a sharded model."""
        backup = {name: p.detach().clone() for name, p in self.parameters.items()}
        with self._fsdp_state_dict_context():
            model_state = self._fsdp_root.state_dict()  # the raw weights, to leave the rest unchanged
            self._fsdp_root.load_state_dict({**model_state, **shadow})
        for name, param in self.parameters.items():
            self.shadow[name] = param.detach().clone()
            param.copy_(backup[name])

    # ------------------------------------------------------------------ averaging and swapping
    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        self.num_updates += 1
        for name, param in self.parameters.items():
            shadow = self.shadow[name]
            if shadow.shape != param.shape:
                raise RuntimeError(f"EMA of {name} has shape {tuple(shadow.shape)}, the parameter {tuple(param.shape)}: "
                                   "a sharding strategy wrapped the model without calling shard_for_fsdp")
            if shadow.device != param.device:
                shadow = self.shadow[name] = shadow.to(param.device)
            shadow.lerp_(param.detach().to(shadow.dtype), 1.0 - decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the model; restore the raw ones after.

        Re-entrant: inside an outer `swapped_in` the weights already are the averaged ones (the
        FSDP export gathers them with the EMA swapped in, then calls code that swaps it in again)."""
        if self._swapped_in:
            yield
            return
        backup = {name: p.detach().clone() for name, p in self.parameters.items()}
        try:
            with torch.no_grad():
                for name, param in self.parameters.items():
                    param.copy_(self.shadow[name])
            self._swapped_in = True
            yield
        finally:
            self._swapped_in = False
            with torch.no_grad():
                for name, param in self.parameters.items():
                    param.copy_(backup[name])

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for name, param in self.parameters.items():
            param.copy_(self.shadow[name])

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        if self.is_sharded:
            shadow = self._fsdp_shadow_state()
        else:
            shadow = {k: v.detach().cpu() for k, v in self.shadow.items()}
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": shadow}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        unexpected = set(state["shadow"]) - set(self.shadow)
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        values = state["shadow"]
        if self.is_sharded and any(_is_distributed_tensor(v) for v in values.values()):
            self._load_fsdp_sharded(values)
            return
        for name, value in values.items():
            param = self.parameters[name]
            if name in self._shard_ranges:  # a full-shape tensor (a "full" checkpoint): keep this rank's slice
                if value.shape != self._full_shapes[name]:
                    raise KeyError(f"EMA state of {name} has shape {tuple(value.shape)}, the model "
                                   f"{tuple(self._full_shapes[name])}")
                start, stop = self._shard_ranges[name]
                value = value.reshape(-1)[start:stop]
            self.shadow[name] = value.to(param.device, param.dtype).clone()


def _is_distributed_tensor(value) -> bool:
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    return isinstance(value, (ShardedTensor, DTensor))


def local_shard_ranges(root: nn.Module) -> dict[int, tuple[int, int]]:
    """{id(original parameter): [start, stop) of its flattened values in this rank's shard}.

    For every FSDP unit under `root` that shards (not NO_SHARD) and keeps its original parameters
    (`use_orig_params=True`). Read from torch FSDP's flat-parameter bookkeeping
    (`FlatParameter._shard_param_infos`, inclusive end index), which the parameter views are cut
    with; a parameter entirely on other ranks gets the empty range (0, 0)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    ranges: dict[int, tuple[int, int]] = {}
    for module in root.modules():
        handle = getattr(module, "_handle", None) if isinstance(module, FSDP) else None
        if handle is None or not handle.uses_sharded_strategy:
            continue
        flat = handle.flat_param
        if flat._params is None:  # use_orig_params=False: the original parameters are gone
            continue
        for param, info in zip(flat._params, flat._shard_param_infos):
            ranges[id(param)] = (info.intra_param_start_idx, info.intra_param_end_idx + 1) if info.in_shard else (0, 0)
    return ranges
