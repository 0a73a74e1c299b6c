"""Small helpers shared across packages: seeding, device choice, CPU threads, file modes, config
instantiation."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_cpu_threads(num_threads: int | None) -> None:
    """Cap intra-op threads (the CI machine has 2 cores; oversubscription slows everything)."""
    if num_threads:
        torch.set_num_threads(num_threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))


def apply_default_file_mode(path: str | os.PathLike) -> None:
    """Give a file the permissions a plain `open(path, "w")` would have (0666 minus the umask).

    `tempfile.mkstemp` creates files readable by their owner only (0600); an atomic write that
    renames such a file into place would otherwise leave videos and tables that the rest of a
    shared group (or a web server showing samples) cannot read.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def instantiate_config(config: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, re-raising our own errors as themselves.

    Hydra wraps an exception raised inside a `_target_` in an `InstantiationException` (nested
    once per config level), which would turn a one-line `error: ...` about bad input (a missing
    export, a mismatched objective) into a traceback. Other exceptions keep Hydra's wrapping.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from lumiere.errors import LumiereError

    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, LumiereError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
