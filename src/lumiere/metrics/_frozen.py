"""Keep a metric's frozen network out of checkpoints.

The feature extractor of FVD (I3D, 50 MB) and the classifier of IS (C3D, 300 MB) are submodules of
their metrics, so ``.to(device)`` and DDP handle them as usual; but a LightningModule that holds a
metric would also save them in every checkpoint and load them back over the pretrained weights.
These hooks drop the network's keys from ``state_dict()`` and forgive their absence on load.
"""

from __future__ import annotations

from torch import nn


def exclude_from_state_dict(module: nn.Module, child_name: str) -> None:
    """Leave ``module.<child_name>.*`` out of ``module.state_dict()`` and tolerate it missing on load."""
    marker = f"{child_name}."

    def drop_keys(_module, state_dict, prefix, _local_metadata):
        for key in [k for k in state_dict if k.startswith(prefix + marker)]:
            del state_dict[key]
        return state_dict

    def forgive_missing(_module, incompatible_keys):
        for key in [k for k in incompatible_keys.missing_keys if k == marker[:-1] or f".{marker}" in f".{k}"]:
            incompatible_keys.missing_keys.remove(key)

    module._register_state_dict_hook(drop_keys)
    module.register_load_state_dict_post_hook(forgive_missing)
