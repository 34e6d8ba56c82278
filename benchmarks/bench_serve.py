"""Load test of ``reslab serve`` on loopback: images/s and latency percentiles at 1, 4, 16
and 64 concurrent clients, dynamic batching against one request per forward pass.

Both arms run the same server code (``python -m reslab serve`` in its own process, so client and
server do not share a GIL) on the same model: the shipped resnet20 trained on Fashion-MNIST
(28x28 grey), with real Fashion-MNIST test images sent as PNG files.

  * ``batched``: ``--max-batch 32 --max-delay-ms 5`` (the defaults);
  * ``one-per-forward``: ``--max-batch 1 --max-delay-ms 0``, the endpoint a user would write
    by hand (decode, preprocess, ``model(x[None])``).

Clients are closed loops (each sends its next request when the last is answered) over
keep-alive HTTP/1.1 connections, written on raw asyncio streams so the client costs little
CPU. Every level is bounded in requests and seconds, is measured three times with the arms
alternating (the median round is reported), and targets 127.0.0.1 only. At the end,
the batched server's resident memory is read before and after 10,000 more requests.

Goals (issue 18, at 16 clients): batched >= 3x the images/s of one-per-forward, and batched
p99 < 2x the single-request latency of one-per-forward at 1 client.

    python benchmarks/bench_serve.py            # full run (~3 min on 2 cores); writes JSON
    python benchmarks/bench_serve.py --quick    # smoke run; writes nothing
"""

from __future__ import annotations

import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import parse_args, write_record  # benchmarks/common.py
from PIL import Image

HOST = "127.0.0.1"  # loopback only, by design
LEVELS = (1, 4, 16, 64)
ARMS = {"batched": ["--max-batch", "32", "--max-delay-ms", "5"],
        "one-per-forward": ["--max-batch", "1", "--max-delay-ms", "0"]}


def make_checkpoint(folder: Path) -> Path:
    """The shipped Fashion-MNIST resnet20 as a reslab checkpoint file."""
    import json

    import reslab
    from reslab.files import save_checkpoint

    card = json.loads((Path(reslab.__file__).parent / "weights" /
                       "resnet20_fashion_mnist.json").read_text())
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1,
                                pretrained="reslab:resnet20_fashion_mnist")
    path = folder / "resnet20_fashion_mnist.pt"
    save_checkpoint({"model_args": card["model_args"], "model": model.state_dict(),
                     "classes": card["classes"], "preprocess": card["preprocess"],
                     "metrics": {"test_acc": card["accuracy"]["test_top1"]}}, path)
    return path


def test_images(n: int = 64) -> list[bytes]:
    """``n`` Fashion-MNIST test images as PNG files."""
    from reslab.data.fashion_mnist import read_fashion_mnist

    images = read_fashion_mnist()["test"][0][:n]  # uint8 (n, 1, 28, 28)
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(img, dtype=np.uint8).reshape(28, 28)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(ckpt: Path, arm: list[str], threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "reslab", "serve", str(ckpt), "--host", HOST,
                             "--port", str(port), "--threads", str(threads), "--queue", "512",
                             *arm], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection posting PNG bodies to /predict."""

    def __init__(self, port: int):
        self.port = port

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def predict(self, body: bytes) -> int:
        head = (f"POST /predict?topk=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self):
        self.writer.close()


async def load(port: int, images: list[bytes], clients: int, requests: int,
               seconds: float) -> dict:
    """``clients`` closed loops sharing ``requests`` requests, stopped after ``seconds``."""
    conns = [Connection(port) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    latencies, errors, left = [], 0, [requests]
    stop = time.perf_counter() + seconds

    async def loop(i: int, conn: Connection):
        nonlocal errors
        k = i
        while left[0] > 0 and time.perf_counter() < stop:
            left[0] -= 1
            t0 = time.perf_counter()
            status = await conn.predict(images[k % len(images)])
            latencies.append(time.perf_counter() - t0)
            errors += status != 200
            k += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(i, c) for i, c in enumerate(conns)))
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    lat = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(lat), "errors": errors,
            "images_per_s": round(len(lat) / wall, 1), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2), "wall_s": round(wall, 2)}


def run_levels(ckpt, images, threads, requests, seconds, repeats, memory_requests=0) -> dict:
    """Both arms' servers run side by side (an idle server costs no CPU); each level is
    measured ``repeats`` times, alternating the arms, so a change in the machine's load hits
    both; the round with the median images/s is reported."""
    servers = {arm: start_server(ckpt, flags, threads) for arm, flags in ARMS.items()}
    try:
        results = {arm: {"settings": " ".join(ARMS[arm]), "levels": [], "memory": None}
                   for arm in ARMS}
        for _proc, port in servers.values():
            asyncio.run(load(port, images, 4, 100, 30))  # warm-up: first calls, allocator
        for clients in LEVELS:
            rounds: dict[str, list[dict]] = {arm: [] for arm in ARMS}
            for _ in range(repeats):  # arms alternate within each round
                for arm, (_proc, port) in servers.items():
                    n = max(requests, 20 * clients)
                    rounds[arm].append(asyncio.run(load(port, images, clients, n, seconds)))
            for arm, rows in rounds.items():
                row = sorted(rows, key=lambda r: r["images_per_s"])[len(rows) // 2]  # median round
                row["rounds_images_per_s"] = [r["images_per_s"] for r in rows]
                print(f"{arm:>16} {clients:>3} clients: {row['images_per_s']:>7.1f} img/s  "
                      f"p50 {row['p50_ms']:>6.2f} ms  p99 {row['p99_ms']:>7.2f} ms  "
                      f"(median of {row['rounds_images_per_s']} img/s; {row['errors']} errors)",
                      flush=True)
                results[arm]["levels"].append(row)
        if memory_requests:
            proc, port = servers["batched"]
            before = rss_mb(proc.pid)
            asyncio.run(load(port, images, 16, memory_requests, 600))
            memory = {"requests": memory_requests, "rss_before_mb": round(before, 1),
                      "rss_after_mb": round(rss_mb(proc.pid), 1)}
            print(f"batched: server RSS {memory['rss_before_mb']} MB -> {memory['rss_after_mb']} "
                  f"MB over {memory_requests} more requests", flush=True)
            results["batched"]["memory"] = memory
        return results
    finally:
        for proc, _port in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    args = parse_args(__doc__, "serve.json")
    threads = args.threads or 1
    requests, seconds, repeats = (60, 5.0, 1) if args.quick else (400, 15.0, 3)
    images = test_images()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp))
        results = run_levels(ckpt, images, threads, requests, seconds, repeats,
                             memory_requests=0 if args.quick else 10_000)
    one, bat = results["one-per-forward"]["levels"], results["batched"]["levels"]
    at16 = LEVELS.index(16)
    speedup = bat[at16]["images_per_s"] / one[at16]["images_per_s"]
    # Each round ran both arms back to back: their ratio is the least disturbed by load drift.
    paired = sorted(b / o for b, o in zip(bat[at16]["rounds_images_per_s"],
                                          one[at16]["rounds_images_per_s"]))
    p99_ratio = bat[at16]["p99_ms"] / one[0]["p50_ms"]
    goals = {"speedup_at_16": round(speedup, 2), "speedup_goal_met": speedup >= 3.0,
             "paired_round_speedups_at_16": [round(r, 2) for r in paired],
             "p99_at_16_over_single_latency": round(p99_ratio, 2), "p99_goal_met": p99_ratio < 2.0}
    print(f"at 16 clients, round by round: batched/one-per-forward = "
          f"{', '.join(f'{r:.2f}x' for r in paired)}")
    print(f"at 16 clients: batched {speedup:.2f}x the images/s of one-per-forward (goal >= 3x: "
          f"{'met' if goals['speedup_goal_met'] else 'NOT met'}); batched p99 {bat[at16]['p99_ms']} ms "
          f"= {p99_ratio:.2f}x the 1-client single-request latency {one[0]['p50_ms']} ms "
          f"(goal < 2x: {'met' if goals['p99_goal_met'] else 'NOT met'})")
    write_record(args, threads, machine=f"{platform.machine()}, {os.cpu_count()} cores",
                 model="resnet20 (shipped Fashion-MNIST weights), 1x28x28 PNG uploads",
                 command="python benchmarks/bench_serve.py", results=results, goals=goals)


if __name__ == "__main__":
    main()
