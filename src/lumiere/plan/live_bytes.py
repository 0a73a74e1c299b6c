"""Counting the bytes of live tensors during one step, and CUDA's autocast policy on the CPU.

:class:`LiveBytesCounter` is a ``TorchDispatchMode``: every tensor an operator returns is charged
once per storage (views share their base's storage), rounded up to the 512-byte blocks of CUDA's
caching allocator, and released when the storage is freed (a weak reference's callback). It works
the same on real tensors and on fake ones (``FakeTensorMode``, no data), which is what lets the
planner run a paper-size step on a CPU: shapes, dtypes and lifetimes are real, arithmetic is not
done. Tensors that existed before the counter was entered (weights, inputs) are not charged: the
peak is the step's growth over them, as ``torch.cuda.max_memory_allocated`` growth is.

Two kinds of storage are counted apart, so that FSDP's sharding can be applied afterwards:

- gradients of the trainable parameters (found by a post-accumulate-grad hook on each parameter);
- autocast's lower-precision copies of parameters (``_to_copy`` of a parameter's storage), which
  under FSDP mixed precision are the all-gathered bf16 weights instead.

``peak_for(grad_scale, cast_scale)`` is the peak of ``other + grad_scale * grads + cast_scale *
casts`` over the step, kept online for the scales given at construction.

:func:`cuda_autocast_on_cpu`: CPU autocast runs ``group_norm``, ``layer_norm``, ``softmax`` and a
few other ops in the input's dtype, CUDA autocast runs them in float32 (its "fp32 ops" list). The
memory of a bf16-mixed step depends on it (a float32 copy of every normalised activation is kept
for backward), so inside this context those ops get CUDA's policy through kernels registered for
the ``AutocastCPU`` dispatch key; the lower-precision list (convolutions, matmuls, linear,
attention) is the same on both devices.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

CUDA_BLOCK_BYTES = 512  # CUDA's caching allocator rounds every allocation up to 512 bytes
GRAD, CAST, OTHER = "grad", "cast", "other"

# CUDA autocast's "fp32" ops that a diffusers / STUNet step calls and CPU autocast leaves in bf16.
_CUDA_FLOAT32_OPS = (
    "group_norm", "layer_norm", "softmax.int", "log_softmax.int", "exp", "log", "rsqrt",
    "reciprocal", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "softplus", "cumsum", "norm.Scalar",
)  # fmt: skip


def _block_bytes(nbytes: int) -> int:
    return -(-nbytes // CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES


class LiveBytesCounter(TorchDispatchMode):
    """Live bytes of the tensors created while active, by kind, and their peaks (see the module doc)."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter] = (), scales: Sequence[tuple[float, float]] = ((1.0, 1.0),)):
        super().__init__()
        self.scales = tuple(scales)  # (grad_scale, cast_scale) pairs whose peaks are kept
        self.live = {GRAD: 0, CAST: 0, OTHER: 0}
        self.peaks = dict.fromkeys(self.scales, 0)
        self._kind: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> [kind, bytes]
        self._parameter_storages: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._hooks = []
        for param in parameters:
            self._parameter_storages[param.untyped_storage()] = True
            if param.requires_grad:
                self._hooks.append(param.register_post_accumulate_grad_hook(self._mark_grad))

    # -- results ---------------------------------------------------------------------------------

    @property
    def peak(self) -> int:
        """Peak of all live bytes together (gradients and weight casts at full weight)."""
        return self.peaks.get((1.0, 1.0), 0)

    def peak_for(self, grad_scale: float, cast_scale: float) -> int:
        return self.peaks[(grad_scale, cast_scale)]

    @property
    def total_live(self) -> int:
        return sum(self.live.values())

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    # -- bookkeeping -----------------------------------------------------------------------------

    def _update_peaks(self) -> None:
        for grad_scale, cast_scale in self.scales:
            value = self.live[OTHER] + grad_scale * self.live[GRAD] + cast_scale * self.live[CAST]
            if value > self.peaks[(grad_scale, cast_scale)]:
                self.peaks[(grad_scale, cast_scale)] = int(value)

    def _charge(self, storage: torch.UntypedStorage, kind: str) -> None:
        if storage in self._kind or storage in self._parameter_storages:
            return
        nbytes = _block_bytes(storage.nbytes())
        entry = [kind, nbytes]
        self._kind[storage] = entry
        self.live[kind] += nbytes
        weakref.finalize(storage, self._release, entry)
        self._update_peaks()

    def _release(self, entry: list) -> None:
        self.live[entry[0]] -= entry[1]

    def _mark_grad(self, param: torch.nn.Parameter) -> None:
        entry = self._kind.get(param.grad.untyped_storage()) if param.grad is not None else None
        if entry is not None and entry[0] != GRAD:
            self.live[entry[0]] -= entry[1]
            entry[0] = GRAD
            self.live[GRAD] += entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        kind = OTHER
        if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor):
            if args[0].untyped_storage() in self._parameter_storages:
                kind = CAST
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._charge(tensor.untyped_storage(), kind)
        return out


def _float32_kernel(op):
    """An AutocastCPU kernel running ``op`` on float32 copies of its low-precision tensor arguments."""
    excluded = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

    def kernel(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            args, kwargs = tree_map_only(
                torch.Tensor, lambda t: t.float() if t.dtype in (torch.bfloat16, torch.float16) else t, (args, kwargs)
            )
            return op(*args, **kwargs)

    return kernel


@contextmanager
def cuda_autocast_on_cpu() -> Iterator[None]:
    """Within: CPU autocast runs CUDA autocast's float32 ops in float32 (see the module doc)."""
    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():  # "overriding a previously registered kernel": the point here
            warnings.simplefilter("ignore", UserWarning)
            for name in _CUDA_FLOAT32_OPS:
                packet, _, overload = name.partition(".")
                op = getattr(getattr(torch.ops.aten, packet), overload or "default")
                library.impl(name, _float32_kernel(op), "AutocastCPU")
        yield
    finally:
        library._destroy()
