"""After training: where does the model fail, why, and how sure is it?

- ``evaluate``: top-1/top-5, per-class P/R/F1, confusion matrix, calibration (ECE).
- ``fit_temperature``: temperature scaling (Guo et al. 2017) on validation logits.
- ``grad_cam``: heat maps of the evidence for a class (Selvaraju et al. 2017).
- ``predict``: top-k labels for files, folders and globs.
- ``write_report``: one self-contained HTML page about a run.
"""

from .calibration import expected_calibration_error, fit_temperature, reliability_bins
from .evaluate import EvalResult, evaluate, metrics_from_logits
from .explain import Explanation, explain_images
from .gradcam import grad_cam, overlay
from .loading import LoadedRun, load_run
from .metrics import confusion_matrix, most_confused, per_class_scores, topk_accuracy
from .predict import Prediction, expand_paths, predict
from .report import write_report

__all__ = [
    "EvalResult",
    "Explanation",
    "LoadedRun",
    "Prediction",
    "confusion_matrix",
    "evaluate",
    "expand_paths",
    "expected_calibration_error",
    "explain_images",
    "fit_temperature",
    "grad_cam",
    "load_run",
    "metrics_from_logits",
    "most_confused",
    "overlay",
    "per_class_scores",
    "predict",
    "reliability_bins",
    "topk_accuracy",
    "write_report",
]
