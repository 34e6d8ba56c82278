"""reslab: build ResNets from scratch, train and fine-tune them on your own images."""

# Importing reslab changes no process-wide setting: ``fit`` and the ``reslab`` command opt in
# to reslab.cpu_memory's malloc tuning; a library user calls ``cpu_memory.configure()`` to.
__version__ = "0.1.0"


def load_pretrained(model, source, **kwargs):
    """Loads weights from ``source`` into ``model``; see ``reslab.models.pretrained``."""
    from .models.pretrained import load_pretrained as _load

    return _load(model, source, **kwargs)


def optimize_for_inference(model, example_input, precision="auto", **kwargs):
    """Fast inference version of ``model``; see ``reslab.export.optimize``."""
    from .export.optimize import optimize_for_inference as _optimize

    return _optimize(model, example_input, precision, **kwargs)


# Names load their module (and torch) on first use, so ``import reslab``, ``reslab --help``
# and ``reslab models`` stay fast.
_LAZY = {"fit": "reslab.engine", "load_config": "reslab.config", "create_model": "reslab.models",
         "list_models": "reslab.models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reslab' has no attribute {name!r}")


__all__ = ["__version__", "create_model", "fit", "list_models", "load_config", "load_pretrained",
           "optimize_for_inference"]  # fmt: skip
