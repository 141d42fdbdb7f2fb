"""A linear toxicity probe on the residual stream (facade: the pieces live in four modules).

* :mod:`lens.probe_core` — :class:`Probe` (scores raw residual vectors of any leading shape, e.g. one
  token as it is generated) and its ``probe.safetensors`` + ``probe.json`` format (never pickle);
* :mod:`lens.probe_features` — :func:`collect_residuals` pools ``blocks.{l}.hook_resid_post`` (or
  ``resid_pre``) over positions (``mean`` or ``last``), texts grouped by length, never padded;
* :mod:`lens.probe_fit` — :func:`train_probe` / :func:`fit_probe`: standardised features, an
  L2-regularised logistic regression on a seeded, stratified split, held-out accuracy and ROC AUC;
* :mod:`lens.probe_data` — :func:`load_labelled`: texts and 0/1 labels from a CSV or JSONL file.

Token-level probes (one example per token, what a generation monitor reads) are in
:mod:`lens.token_probe` and :mod:`lens.mil_probe`.
"""

from __future__ import annotations

from lens.probe_core import FORMAT_VERSION, HOOKS, POOLINGS, Probe
from lens.probe_data import load_labelled
from lens.probe_features import collect_residuals, length_batches, tokenize_texts
from lens.probe_fit import (
    _check_labels,
    check_labels,
    data_hash,
    fit_probe,
    roc_auc,
    split,
    train_all_layers,
    train_probe,
)

__all__ = [
    "FORMAT_VERSION",
    "HOOKS",
    "POOLINGS",
    "Probe",
    "_check_labels",
    "check_labels",
    "collect_residuals",
    "data_hash",
    "fit_probe",
    "length_batches",
    "load_labelled",
    "roc_auc",
    "split",
    "tokenize_texts",
    "train_all_layers",
    "train_probe",
]
