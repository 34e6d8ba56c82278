"""The optional packages an export needs, checked before any work, with the extra that
installs them named in the message (``pip install 'reslab[onnx]'``)."""

from __future__ import annotations

import importlib

from ..errors import ConfigError

# format -> (extra, modules it installs that the format imports)
NEEDS = {
    "onnx": ("onnx", ("onnx", "onnxscript", "onnxruntime")),
}


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_extra(fmt: str) -> None:
    """Raises ConfigError naming the extra and the pip command when ``fmt`` needs packages
    that are not installed (does nothing for formats plain PyTorch writes)."""
    if fmt not in NEEDS:
        return
    extra, modules = NEEDS[fmt]
    missing = missing_modules(modules)
    if missing:
        raise ConfigError(f"--format {fmt} needs the {', '.join(missing)} package(s), which are "
                          f"not installed. They come with the {extra!r} extra: "
                          f"pip install 'reslab[{extra}]' (or pip install {' '.join(modules)}).")  # fmt: skip
