"""Evaluation of the base model (paper Sec. 5.2, Table 1, App. D.1 and D.2).

- ``evaluate(cfg)``: the task of ``evaluate.py``; ``evaluation=synthetic`` (default) scores a base
  checkpoint on the synthetic benchmark next to the vigilance-test rows (real held-out clips,
  static clips, random noise), ``evaluation=ucf101`` runs the zero-shot UCF101 protocol.
- ``evaluate_synthetic`` / ``evaluate_ucf101``: the same from plain settings.
- ``ensure_domain_classifier``: the cached in-domain classifier
  (``python -m lumiere.evaluation.domain_classifier``).
- ``ResultTable`` and ``write_table``: markdown + CSV + json tables.

Attributes are imported on first use (PEP 562), so ``python -m lumiere.evaluation.domain_classifier``
does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate": "lumiere.evaluation.task",
    "SyntheticSettings": "lumiere.evaluation.synthetic",
    "evaluate_synthetic": "lumiere.evaluation.synthetic",
    "sanity_holds": "lumiere.evaluation.synthetic",
    "UCF101Settings": "lumiere.evaluation.ucf101",
    "evaluate_ucf101": "lumiere.evaluation.ucf101",
    "PAPER_TABLE1": "lumiere.evaluation.ucf101",
    "ClassifierSettings": "lumiere.evaluation.domain_classifier",
    "ClipSettings": "lumiere.evaluation.domain_classifier",
    "ensure_domain_classifier": "lumiere.evaluation.domain_classifier",
    "Column": "lumiere.evaluation.report",
    "ResultTable": "lumiere.evaluation.report",
    "log_table": "lumiere.evaluation.report",
    "ordering_check": "lumiere.evaluation.report",
    "write_table": "lumiere.evaluation.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lumiere.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
