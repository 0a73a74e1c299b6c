"""Evaluation of the base model (paper Sec. 5.2, Table 1, App. D.1 and D.2).

- ``evaluate_synthetic``: scores a base checkpoint on the synthetic benchmark next to the
  vigilance-test rows (real held-out clips, static clips, random noise).
- ``evaluate_ucf101``: the zero-shot UCF101 protocol (``ucf101_protocol``: class prompts,
  apportionment of 10,235 videos, resumable generation with its ledger, real statistics).
- ``lumiere.evaluation.probes``: the prompt-following probes of the demo checkpoints
  (``python -m lumiere.evaluation.probes``).
- ``ensure_domain_classifier``: the cached in-domain classifier
  (``python -m lumiere.evaluation.domain_classifier``).
- ``ResultTable`` and ``write_table``: markdown + CSV + json tables.

The task of ``evaluate.py`` (config -> settings -> protocol -> written table) is
``lumiere.tasks.evaluate``.

Attributes are imported on first use (PEP 562), so ``python -m lumiere.evaluation.domain_classifier``
does not import its own module twice.
"""

from __future__ import annotations

from lumiere._lazy import lazy_exports

_EXPORTS = {
    "SyntheticSettings": "lumiere.evaluation.synthetic_settings",
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
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
