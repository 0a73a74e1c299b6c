"""Small helpers shared across packages: seeding, device choice, CPU threads, quiet libraries, file
modes, config instantiation."""

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


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' warnings and progress bars for the whole process.

    Loading a U-Net or text encoder otherwise prints library notices (diffusers' "Cannot initialize
    model with low cpu memory usage because `accelerate` was not found", weight-loading bars)
    before the task's own output, and above a one-line ``error: ...``. ``run_task`` calls this
    first, so every entry point's task runs quiet; the libraries' errors still raise.
    """
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def apply_default_file_mode(path: str | os.PathLike) -> None:
    """Give a file the permissions a plain `open(path, "w")` would have (0666 minus the umask).

    `tempfile.mkstemp` creates files readable by their owner only (0600); an atomic write that
    renames such a file into place would otherwise leave videos and tables that the rest of a
    shared group (or a web server showing samples) cannot read.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(stream)`` on a temporary file beside ``path``, fsync it and rename it over ``path``.

    A reader sees the previous file or the new one, never half of one. On any failure the temporary
    file is removed, the previous ``path`` is left as it was, and an OSError becomes one
    InputFileError line saying so."""
    import tempfile
    from pathlib import Path

    from lumiere.errors import InputFileError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as error:
        raise InputFileError(f"could not write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        apply_default_file_mode(temporary)  # mkstemp's 0600 -> what open(path, "w") would give
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise InputFileError(f"could not write {path}: {error.strerror or error}; {kept}") from None
        raise


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
