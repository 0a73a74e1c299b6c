"""Evaluation of the base model (paper Sec. 5.2, Table 1, App. D.1 and D.2).

- ``evaluate(cfg)``: the task of ``evaluate.py``; ``evaluation=synthetic`` (default) scores a base
  checkpoint on the synthetic benchmark next to the vigilance-test rows (real held-out clips,
  static clips, random noise), ``evaluation=ucf101`` runs the zero-shot UCF101 protocol.
- ``evaluate_synthetic`` / ``evaluate_ucf101``: the same from plain settings.
- ``ensure_domain_classifier``: the cached in-domain classifier
  (``python -m lumiere.evaluation.domain_classifier``).
- ``ResultTable`` and ``write_table``: markdown + CSV + json tables.
"""

from lumiere.evaluation.domain_classifier import ClassifierSettings, ClipSettings, ensure_domain_classifier
from lumiere.evaluation.report import Column, ResultTable, log_table, ordering_check, write_table
from lumiere.evaluation.synthetic import SyntheticSettings, evaluate_synthetic, sanity_holds
from lumiere.evaluation.task import evaluate
from lumiere.evaluation.ucf101 import PAPER_TABLE1, UCF101Settings, evaluate_ucf101

__all__ = [
    "ClassifierSettings",
    "ClipSettings",
    "Column",
    "PAPER_TABLE1",
    "ResultTable",
    "SyntheticSettings",
    "UCF101Settings",
    "ensure_domain_classifier",
    "evaluate",
    "evaluate_synthetic",
    "evaluate_ucf101",
    "log_table",
    "ordering_check",
    "sanity_holds",
    "write_table",
]
