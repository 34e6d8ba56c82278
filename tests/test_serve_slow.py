"""``reslab serve`` end to end: the real command in its own process, an export folder
served by onnxruntime, and memory over 10,000 requests. Slow (process start-up, an ONNX
export, many requests); the fast tests are in test_serve.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from test_evaluate_helpers import digits_run, torch_threads

from reslab.data import load_dataset

pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _digit_png(i: int = 0) -> tuple[bytes, str]:
    bundle = load_dataset("digits", log=None, check=False)
    buf = io.BytesIO()
    Image.fromarray(bundle.test.images[i, 0].numpy()).save(buf, format="PNG")
    return buf.getvalue(), str(int(bundle.test.labels[i]))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_serve_command_answers_predict_and_explain(tmp_path_factory):
    from reslab.serve.server import free_port

    run = digits_run(tmp_path_factory)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "reslab", "serve", str(run), "--port",
                             str(port), "--threads", "1"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(0.2)
        png, label = _digit_png()
        r = httpx.post(url + "/predict", files={"image": ("d.png", png, "image/png")})
        assert r.status_code == 200 and r.json()["label"] == label
        r = httpx.post(url + "/explain", files={"image": ("d.png", png, "image/png")})
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "serving resnet20" in out and "127.0.0.1" in out


def test_an_export_folder_is_served_without_explain(tmp_path_factory, tmp_path):
    pytest.importorskip("onnxruntime")
    from starlette.testclient import TestClient

    from reslab.export import export_model
    from reslab.serve import ServedModel, create_app

    with torch_threads(1):
        run = digits_run(tmp_path_factory)
        export_model(run, "onnx", tmp_path / "onnx", parity_images=64, log=None)
        served = ServedModel.load(tmp_path / "onnx")
    png, label = _digit_png()
    with TestClient(create_app(served)) as c:
        r = c.post("/predict", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["label"] == label
        assert c.get("/card").json()["explain"] is False
        r = c.post("/explain", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 400 and "export folder" in r.json()["error"]


def test_memory_stays_flat_over_10000_requests(tmp_path_factory):
    from starlette.testclient import TestClient

    from reslab.serve import ServedModel, create_app

    with torch_threads(1):
        served = ServedModel.load(digits_run(tmp_path_factory))
        png, _ = _digit_png()
        bad = [(b"not an image", "image/png"), (b"x", "text/plain"), (png[:30], "image/png")]
        with TestClient(create_app(served)) as c:
            for _ in range(1_000):  # warm-up: allocator pools, oneDNN kernels, buffers
                c.post("/predict", content=png, headers={"content-type": "image/png"})
            before = _rss_mb()
            for i in range(10_000):
                body, ctype = (png, "image/png") if i % 10 else bad[i // 10 % 3]
                r = c.post("/predict", content=body, headers={"content-type": ctype})
                assert r.status_code == 200 if i % 10 else 400 <= r.status_code < 500
            after = _rss_mb()
            assert c.get("/health").json()["status"] == "ok"
    assert after - before < 40, f"RSS grew from {before:.0f} MB to {after:.0f} MB"
