"""Probing frozen embeddings, and the baselines and protocols they are judged by.

- :mod:`.probes`: embeddings (:func:`extract_features`), the linear probe (logistic
  regression) and the MLP probe, :func:`fit_probe`.
- :mod:`.metrics`: accuracy, macro-F1, balanced accuracy, AUROC, the majority-class rate.
- :mod:`.protocol`: folds (subject-wise, window-level), per-subject calibration,
  :func:`probe_features` / :func:`score_folds`.
- :mod:`.baselines`: HRV features, random encoders, the supervised end-to-end encoder.
- :mod:`.suite`: encoders and baselines under every protocol (``ecgfast evaluate``).
- :mod:`.stats` and :mod:`.tables`: summaries, paired differences with their intervals,
  Markdown and text tables.
- :mod:`.compare`: probe accuracy of fp32 against INT8 embeddings (ONNX export).
"""

from ecgfast.evaluation.baselines import BASELINES, DEFAULT_BASELINES, FEATURE_MODES
from ecgfast.evaluation.compare import compare_probe_accuracy, linear_probe_accuracy, standard_error
from ecgfast.evaluation.metrics import METRICS, auroc, balanced_accuracy, macro_f1, majority_rate
from ecgfast.evaluation.probes import (
    PROBES,
    FittedProbe,
    extract_features,
    fit_probe,
    train_linear,
    train_probe,
)
from ecgfast.evaluation.protocol import (
    CALIBRATIONS,
    LABELS,
    SPLITS,
    calibrate_within_subject,
    default_tasks,
    make_folds,
    probe_features,
    score_folds,
)
from ecgfast.evaluation.suite import evaluate_suite
from ecgfast.evaluation.tables import differences, format_table, markdown_tables, summarise


def evaluate_encoder(encoder, windows, labels: dict, *, split: str = "subject", groups=None,
                     n_folds: int | None = None, seed: int = 0, device="cpu",
                     progress: bool = False, n_classes: dict | None = None, probe: str = "mlp",
                     calibration: str = "none", **probe_kwargs) -> dict[str, dict]:
    """Embed ``windows`` with the frozen encoder, then :func:`probe_features`.

    ``probe_kwargs`` go to the probe (MLP: hidden, epochs, lr, weight_decay; linear: c).
    """
    features = extract_features(encoder, windows, device=device, progress=progress)
    return probe_features(features, labels, split=split, groups=groups, n_folds=n_folds,
                          seed=seed, n_classes=n_classes, probe=probe, calibration=calibration,
                          **probe_kwargs)


__all__ = [
    "BASELINES", "CALIBRATIONS", "DEFAULT_BASELINES", "FEATURE_MODES", "LABELS", "METRICS",
    "PROBES", "SPLITS", "FittedProbe", "auroc", "balanced_accuracy", "calibrate_within_subject",
    "compare_probe_accuracy", "default_tasks", "differences", "evaluate_encoder",
    "evaluate_suite", "extract_features", "fit_probe", "format_table", "linear_probe_accuracy",
    "macro_f1", "majority_rate", "make_folds", "markdown_tables", "probe_features",
    "score_folds", "standard_error", "summarise", "train_linear", "train_probe",
]
