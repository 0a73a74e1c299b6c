"""The tiny trained chain shared by the application tests (built by `tiny_chain`).

T2I export -> base STUNet -> conditional model (+ a style T2I), 16x16 pixels, 8 frames, built
once per test session through the real code paths (Hydra-instantiated configs, Lightning fit and
checkpoints, `load_module_from_checkpoint`).
"""

from __future__ import annotations

from tiny_chain import (  # noqa: F401  (re-exported for the tests)
    FRAMES,
    SIZE,
    TinyChain,
    build_module,
    build_tiny_chain,
    conditional_config,
    synthetic_clips,
)

_CHAINS: dict[str, TinyChain] = {}


def shared_tiny_chain(tmp_path_factory) -> TinyChain:
    """The session's one tiny chain: built on first use, then shared by every test module that asks.

    (A session fixture imported into several test modules would be built once per module; this
    cache is not. The lead owns conftest.py, where a shared fixture would otherwise live.)
    """
    if "chain" not in _CHAINS:
        _CHAINS["chain"] = build_tiny_chain(str(tmp_path_factory.mktemp("apps_chain")))
    return _CHAINS["chain"]
