"""``reslab serve``: the HTTP app on a real trained run (digits), its dynamic batcher, its
limits and its metrics. The oracle for every answer is the run's eager fp32 model on the
same pixels; the server runs the optimised (bf16 where the CPU has it) forward."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from test_evaluate_helpers import digits_run, torch_threads

from reslab.data import load_dataset
from reslab.serve import DynamicBatcher, QueueFull, ServedModel, ServeSettings

pytest.importorskip("fastapi")  # the `serve` extra; the names below import it
from starlette.testclient import TestClient  # noqa: E402

from reslab.serve import create_app  # noqa: E402
from reslab.serve.server import BackgroundServer  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with torch_threads(1):
        return ServedModel.load(digits_run(tmp_path_factory))


@pytest.fixture(scope="module")
def digits_png():
    """Five real digit test images as PNG bytes, with their labels."""
    bundle = load_dataset("digits", log=None, check=False)
    out = []
    for i in range(5):
        buf = io.BytesIO()
        Image.fromarray(bundle.test.images[i, 0].numpy()).save(buf, format="PNG")
        out.append((buf.getvalue(), int(bundle.test.labels[i])))
    return out


@pytest.fixture
def client(served):
    with TestClient(create_app(served, ServeSettings(max_batch=8, max_upload_bytes=20_000))) as c:
        yield c


def _oracle_probs(served, png: bytes) -> torch.Tensor:
    img = Image.open(io.BytesIO(png)).convert("L")
    x = served.preprocess_image(img)[None]  # (1, 1, 8, 8)
    with torch.no_grad():
        return torch.softmax(served._eager(x).double(), 1)[0]


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_predict_matches_the_eager_model_in_every_body_form(client, served, digits_png):
    for png, _label in digits_png:
        want = _oracle_probs(served, png)
        forms = [
            client.post("/predict", files={"image": ("d.png", png, "image/png")}),
            client.post("/predict", json={"image": base64.b64encode(png).decode(), "topk": 3}),
            client.post("/predict?topk=3", content=png, headers={"content-type": "image/png"}),
        ]
        for r in forms:
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["label"] == served.classes[int(want.argmax())]
            assert abs(body["prob"] - float(want.max())) < 0.03  # bf16 forward vs fp32 oracle
        assert len(forms[0].json()["topk"]) == 5 and len(forms[1].json()["topk"]) == 3
    correct = sum(client.post("/predict", content=png, headers={"content-type": "image/png"})
                  .json()["label"] == str(label) for png, label in digits_png)
    assert correct >= 4  # a trained model (98.6% test accuracy), not noise


def test_explain_returns_a_gradcam_png(client, served, digits_png):
    png, _ = digits_png[0]
    r = client.post("/explain", files={"image": ("d.png", png, "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(r.content))
    assert max(overlay.size) == 320 and overlay.mode == "RGB"
    assert r.headers["x-predicted"] == served.classes[int(_oracle_probs(served, png).argmax())]
    r = client.post("/explain?class=3", files={"image": ("d.png", png, "image/png")})
    assert r.status_code == 200 and r.headers["x-explained"] == "3"
    r = client.post("/explain?class=zebra", files={"image": ("d.png", png, "image/png")})
    assert r.status_code == 400 and "zebra" in r.json()["error"]


@pytest.mark.parametrize("kwargs, status, words", [
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    ({"files": {"image": ("a.txt", b"hello", "text/plain")}}, 415, "text/plain"),
    ({"files": {"image": ("a.png", b"hello world", "image/png")}}, 415, "not an image"),
    ({"files": {"image": ("a.png", b"", "image/png")}}, 400, "empty"),
    ({"files": {"other": ("a.png", b"x", "image/png")}}, 400, "'image'"),
    ({"json": {"image": "not base64!"}}, 400, "base64"),
    ({"json": [1, 2]}, 400, "JSON object"),
    ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ({"content": _bomb_png(20_000, 20_000), "headers": {"content-type": "image/png"}}, 413,
     "decompression-bomb"),
    ({"content": b"\0" * 30_000, "headers": {"content-type": "image/png"}}, 413, "limit"),
    ({"files": {"image": ("big.png", b"\0" * 30_000, "image/png")}}, 413, "limit"),
])  # fmt: skip
def test_bad_requests_get_a_4xx_with_a_message(client, digits_png, kwargs, status, words):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    good = client.post("/predict", content=digits_png[0][0], headers={"content-type": "image/png"})
    assert good.status_code == 200  # the server carries on


def test_truncated_image_and_bad_topk(client, digits_png):
    png = digits_png[0][0]
    r = client.post("/predict", content=png[: len(png) // 2], headers={"content-type": "image/png"})
    assert r.status_code in (400, 415) and r.json()["error"]
    r = client.post("/predict?topk=0", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 400 and "1..10" in r.json()["error"]


def test_health_card_metrics_and_docs(client, digits_png):
    for _ in range(3):
        client.post("/predict", content=digits_png[0][0], headers={"content-type": "image/png"})
    client.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    assert client.get("/health").json()["status"] == "ok"
    card = client.get("/card").json()
    assert card["classes"] == [str(i) for i in range(10)] and card["input_size"] == [1, 8, 8]
    assert card["accuracy"]["test_acc"] > 0.9 and card["explain"] is True
    text = client.get("/metrics").text
    assert 'reslab_requests_total{endpoint="/predict",status="200"} 3' in text
    assert 'reslab_requests_total{endpoint="/predict",status="415"} 1' in text
    assert 'reslab_request_seconds_bucket{endpoint="/predict",le="+Inf"} 4' in text
    assert "reslab_batch_size_count 3" in text
    assert client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_api_key_is_required_when_set(served, digits_png):
    app = create_app(served, ServeSettings(api_key="s3cret"))
    png = digits_png[0][0]
    with TestClient(app) as c:
        r = c.post("/predict", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 401 and "X-API-Key" in r.json()["error"]
        r = c.post("/predict", content=png, headers={"content-type": "image/png", "X-API-Key": "no"})
        assert r.status_code == 401
        r = c.post("/predict", content=png, headers={"content-type": "image/png",
                                                     "X-API-Key": "s3cret"})
        assert r.status_code == 200
        assert c.get("/card").json()["api_key_required"] is True


def test_batcher_stacks_concurrent_requests_into_one_forward(served):
    """Eight requests queued together run as one forward of 8; each gets its own row."""
    sizes = []

    def forward(x):
        sizes.append(len(x))
        return served.forward(x)

    images = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    async def go():
        b = DynamicBatcher(forward, max_batch=16, max_delay_ms=20, queue_size=64)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(x) for x in images))
        finally:
            await b.stop()

    rows = asyncio.run(go())
    assert sizes == [8]
    alone = torch.cat([served.forward(x[None]) for x in images])
    assert torch.allclose(torch.stack(rows), alone, atol=1e-2)


def test_batcher_refuses_beyond_its_queue(served):
    async def go():
        b = DynamicBatcher(served.forward, max_batch=4, max_delay_ms=0, queue_size=2)
        await b.start()
        try:
            x = torch.zeros(1, 8, 8)
            first = [asyncio.ensure_future(b.submit(x)) for _ in range(2)]
            await asyncio.sleep(0)  # the two submits enqueue; the worker has not run yet...
            with pytest.raises(QueueFull):
                await b.submit(x)  # ...so a third finds the queue full
            return await asyncio.gather(*first)
        finally:
            await b.stop()

    assert len(asyncio.run(go())) == 2


def test_full_queue_answers_503_over_real_http(served, digits_png):
    """A held forward pass fills the one-slot queue; the next request is told to retry."""
    gate, entered = threading.Event(), threading.Event()

    def held_forward(x):
        entered.set()
        gate.wait(30)
        return served.forward(x)

    held = ServedModel(served.classes, served.preprocess, held_forward, served.card)
    app = create_app(held, ServeSettings(max_batch=1, max_delay_ms=0, queue_size=1))
    png = digits_png[0][0]
    results = []

    def post(url):
        results.append(httpx.post(url + "/predict", content=png, timeout=60,
                                  headers={"content-type": "image/png"}).status_code)

    with BackgroundServer(app) as srv:
        first = threading.Thread(target=post, args=(srv.url,))
        first.start()
        assert entered.wait(30)  # the first request is inside the forward pass
        second = threading.Thread(target=post, args=(srv.url,))
        second.start()
        while app.state.batcher.depth < 1:  # the second waits in the queue
            second.join(0.01)
        r = httpx.post(srv.url + "/predict", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "busy" in r.json()["error"]
        gate.set()
        first.join(30)
        second.join(30)
        assert results == [200, 200]
        assert "reslab_rejected_total 1" in httpx.get(srv.url + "/metrics").text


def test_decode_refuses_more_pixels_than_the_limit():
    from reslab.serve import BadInput, decode_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(buf, format="PNG")
    assert decode_image(buf.getvalue(), 3, max_pixels=10_000).mode == "RGB"
    with pytest.raises(BadInput) as e:
        decode_image(buf.getvalue(), 1, max_pixels=9_999)
    assert e.value.status == 413


def test_batcher_waits_only_for_announced_requests(served):
    """A lone request runs at once despite a long delay; an announced one is waited for."""
    sizes = []

    def forward(x):
        sizes.append(len(x))
        return served.forward(x)

    x = torch.zeros(1, 8, 8)

    async def go():
        b = DynamicBatcher(forward, max_batch=8, max_delay_ms=60_000, queue_size=8)
        await b.start()
        try:
            await asyncio.wait_for(b.submit(x), 30)  # nobody else is coming: no 60 s wait
            with b.incoming():  # a second request is being decoded...
                first = b.enqueue(x)
                await asyncio.sleep(0.05)  # ...the worker holds the first one for it
                second = b.enqueue(x)
            await asyncio.wait_for(asyncio.gather(first, second), 30)
        finally:
            await b.stop()

    asyncio.run(go())
    assert sizes == [1, 2]


def test_serve_command_refuses_bad_options_before_loading(capsys):
    from reslab.cli.main import main

    assert main(["serve", "/no/such/run", "--max-batch", "0"]) == 2
    assert "--max-batch 0" in capsys.readouterr().err
    assert main(["serve", "/no/such/run", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
