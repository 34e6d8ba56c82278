"""reslab: build ResNets from scratch, train and fine-tune them on your own images."""

from . import cpu_memory

# No page faults per batch on CPU: glibc keeps freed memory (see reslab.cpu_memory).
cpu_memory.configure()

from .models import create_model, list_models  # noqa: E402

__version__ = "0.1.0"


def load_pretrained(model, source, **kwargs):
    """Loads weights from ``source`` into ``model``; see ``reslab.models.pretrained``."""
    from .models.pretrained import load_pretrained as _load

    return _load(model, source, **kwargs)


def optimize_for_inference(model, example_input, precision="auto", **kwargs):
    """Fast inference version of ``model``; see ``reslab.export.optimize``."""
    from .export.optimize import optimize_for_inference as _optimize

    return _optimize(model, example_input, precision, **kwargs)


__all__ = ["__version__", "create_model", "list_models", "load_pretrained", "optimize_for_inference"]
