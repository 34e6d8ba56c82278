"""The HTTP application: ``create_app(model, settings)`` returns a FastAPI app.

Endpoints: ``POST /predict`` (top-k labels), ``POST /explain`` (Grad-CAM PNG), ``GET /health``,
``GET /card`` (the model card), ``GET /metrics`` (Prometheus), ``GET /`` (the web page),
``GET /docs`` (OpenAPI). Every failure is an HTTP answer with a message: a bad upload is a
4xx, a full queue a 503, an unexpected error a 500; the process keeps serving.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from ..errors import ReslabError
from .batcher import DynamicBatcher, QueueFull
from .decode import DEFAULT_MAX_UPLOAD_BYTES, BadInput, decode_image
from .inputs import image_from_request
from .metrics import ServerMetrics
from .model import ServedModel

API_KEY_HEADER = "X-API-Key"
INLINE_DECODE_BYTES = 64 * 1024  # larger uploads decode on a worker thread
_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}}, "required": ["image"]}},
    "application/json": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "description": "base64 of the image file"},
        "topk": {"type": "integer"}}, "required": ["image"]}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}}}


@dataclass
class ServeSettings:
    """How the server batches, bounds and guards its work.

    Attributes:
        max_batch: most images in one forward pass (1 = one request per forward).
        max_delay_ms: how long the first request of a batch waits for company.
        queue_size: most requests waiting for a batch; more are answered 503.
        max_upload_bytes: largest image file accepted (413 above).
        api_key: when set, ``/predict`` and ``/explain`` need the ``X-API-Key`` header.
        topk: labels returned when the request does not say.
        explain_waiting: most Grad-CAM requests running or waiting; more are answered 503.
    """

    max_batch: int = 32
    max_delay_ms: float = 5.0
    queue_size: int = 256
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    api_key: str | None = None
    topk: int = 5
    explain_waiting: int = 8


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class MetricsMiddleware:
    """Pure ASGI middleware: times each request, counts its status, turns crashes into 500."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in ("/predict", "/explain", "/health", "/metrics", "/card",
                                        "/") else "other"
            self.metrics.observe_request(endpoint, status[0], time.perf_counter() - start)


def _int_field(fields: dict, request: Request, name: str, default: int, top: int) -> int:
    raw = request.query_params.get(name, fields.get(name, default))
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadInput(400, f"{name}={raw!r} is not an integer.") from None
    if not 1 <= value <= top:
        raise BadInput(400, f"{name}={value} is out of range; expected 1..{top}.")
    return value


def create_app(model: ServedModel, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``model``.

    Args:
        model: a loaded ``ServedModel``.
        settings: batching, limits and the optional API key.
    Returns:
        The app; run it with ``uvicorn.run(app, host="127.0.0.1", port=8000)``.
    """
    cfg = settings or ServeSettings()
    metrics = ServerMetrics()
    batcher = DynamicBatcher(model.forward, cfg.max_batch, cfg.max_delay_ms, cfg.queue_size,
                             on_batch=metrics.observe_batch)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="reslab serve", version="1", lifespan=lifespan,
                  description=f"{model.card.name}: {len(model.classes)} classes, input "
                              f"{'x'.join(map(str, model.card.input_size))}.")
    app.state.model, app.state.metrics, app.state.batcher = model, metrics, batcher
    static = resources.files("reslab.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(BadInput)
    async def _bad_input(_request, exc: BadInput):
        return _error(exc.status, exc.message)

    @app.exception_handler(ReslabError)
    async def _reslab_error(_request, exc: ReslabError):
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):
        return _error(500, f"internal error ({type(exc).__name__}: {exc}); the server keeps running.")

    _image_routes(app, model, cfg, batcher)

    @app.get("/health", summary="Liveness and queue depth")
    async def health():
        return {"status": "ok", "model": model.card.name, "classes": len(model.classes),
                "queue": batcher.depth, "max_batch": cfg.max_batch}

    @app.get("/card", summary="The model card: classes, accuracy, input size")
    async def card():
        return {**model.card.to_dict(), "api_key_required": cfg.api_key is not None}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(static / "index.html"), media_type="text/html")

    # Outermost, so a request that fails anywhere is still timed and counted.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _image_routes(app: FastAPI, model: ServedModel, cfg: ServeSettings,
                  batcher: DynamicBatcher) -> None:
    """``POST /predict`` (batched) and ``POST /explain`` (Grad-CAM, bounded)."""
    explaining = [0]  # Grad-CAM requests running or waiting for the model

    def check_key(request: Request) -> None:
        if cfg.api_key is None:
            return
        given = request.headers.get(API_KEY_HEADER, "")
        if not hmac.compare_digest(given.encode(), cfg.api_key.encode()):
            raise BadInput(401, f"missing or wrong {API_KEY_HEADER} header; this server was "
                                "started with --api-key.")

    async def read_tensor(request: Request):
        check_key(request)
        data, fields = await image_from_request(request, cfg.max_upload_bytes)

        def to_tensor():
            img = decode_image(data, model.in_chans, cfg.max_upload_bytes)
            return model.preprocess_image(img)  # (C, H, W)

        # Small uploads decode faster than a hop to a worker thread and back.
        if len(data) <= INLINE_DECODE_BYTES:
            return to_tensor(), fields
        return await run_in_threadpool(to_tensor), fields

    @app.post("/predict", openapi_extra=_IMAGE_BODY, summary="Top-k labels for one image")
    async def predict(request: Request):
        try:
            with batcher.incoming():  # a forming batch waits for this request's image
                x, fields = await read_tensor(request)
                k = _int_field(fields, request, "topk", min(cfg.topk, len(model.classes)),
                               len(model.classes))
                waiting = batcher.enqueue(x)
        except QueueFull as e:
            return _error(503, f"the server is busy ({e}); retry shortly.", **{"Retry-After": "1"})
        logits = await waiting
        top = model.top_k(logits, k)
        return JSONResponse({"label": top[0]["label"], "prob": top[0]["prob"], "topk": top})

    @app.post("/explain", openapi_extra=_IMAGE_BODY, response_class=Response,
              summary="Grad-CAM overlay (PNG) of what the model looked at")
    async def explain(request: Request):
        x, fields = await read_tensor(request)
        target = request.query_params.get("class", fields.get("class"))
        layer = request.query_params.get("layer", fields.get("layer"))
        if explaining[0] >= cfg.explain_waiting:
            return _error(503, f"{explaining[0]} Grad-CAM requests are already running; retry "
                               "shortly.", **{"Retry-After": "1"})
        explaining[0] += 1
        try:
            png, what = await run_in_threadpool(model.explain_png, x, target, layer)
        finally:
            explaining[0] -= 1
        headers = {"X-Predicted": quote(what["predicted"]), "X-Probability": f"{what['prob']:.6f}",
                   "X-Explained": quote(what["explained"])}
        return Response(png, media_type="image/png", headers=headers)
