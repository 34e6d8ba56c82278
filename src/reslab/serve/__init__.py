"""Serving a trained model over HTTP: ``reslab serve`` with dynamic batching, Grad-CAM,
Prometheus metrics and a web page.

    from reslab.serve import ServedModel, ServeSettings, create_app
    app = create_app(ServedModel.load("runs/my-run"), ServeSettings(max_batch=32))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Names are imported lazily (PEP 562) so ``import reslab.serve`` does not load FastAPI.
"""

from __future__ import annotations

from reslab._lazy import lazy_exports

_EXPORTS = {
    "create_app": "app",
    "ServeSettings": "app",
    "ServedModel": "model",
    "ModelCard": "model",
    "DynamicBatcher": "batcher",
    "QueueFull": "batcher",
    "ServerMetrics": "metrics",
    "BadInput": "decode",
    "decode_image": "decode",
    "serve": "server",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
