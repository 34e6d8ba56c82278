"""Experiments that show the ideas work, each rerunnable with one command
(``reslab experiment ...``, listed in scripts/run_experiments.sh):

- ``degradation``: plain vs residual nets of two depths (He et al. 2015, Figure 6);
- ``gradients``: per-layer gradient norms at initialisation and after training;
- ``headline``: a recipe over seeds, test accuracy against wall-clock time;
- ``transfer``: Fashion-MNIST weights vs from scratch on few-label digits;
- ``plots``, ``tables``, ``figures``: the figures and tables of docs/results/.

Names are imported lazily (PEP 562) so ``import reslab.experiments`` does no work.
"""

from __future__ import annotations

from reslab._lazy import lazy_exports

_EXPORTS = {
    "run_degradation": "degradation",
    "run_gradient_study": "gradients",
    "conv_grad_norms": "gradients",
    "gradient_profile": "gradients",
    "run_recipe": "headline",
    "measure_recipe": "headline",
    "run_transfer": "transfer",
    "draw_all": "figures",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
