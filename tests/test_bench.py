"""``reslab bench``: runs end to end and reports consistent numbers (no speed assertions)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reslab import cpu_memory
from reslab.cli.main import main
from reslab.export.throughput_vs_torchvision import peer_model, time_interleaved


def test_bench_json_for_a_tiny_config(capsys):
    tiny = "--model resnet20 --image-size 16 --batch-size 4 --iters 2 --warmup 1 --threads 1"
    code = main(
        [
            "bench",
            *tiny.split(),
            "--mode",
            "both",
            "--no-compile",
            "--no-int8",
            "--json",
            "--also",
            "jit",
        ]
    )
    assert code == 0
    out = capsys.readouterr()
    result = json.loads(out.out)  # stdout is pure JSON; progress went to stderr
    assert "bench resnet20" in out.err
    assert result["model"] == "resnet20" and result["threads"] == 1 and result["batch_size"] == 4
    assert "torchvision has no resnet20" in result["peer"]
    names = [r["name"] for r in result["inference"]]
    assert names == [
        "peer fp32 eager",
        "peer bf16+cl eager",
        "reslab optimized",
        "reslab optimized, jit",
    ]
    macs = result["macs_per_image"]
    for mode, flop_per_mac in (("inference", 2), ("train", 6)):
        rows = result[mode]
        base, amp = rows[0]["images_per_s"], rows[1]["images_per_s"]
        for r in rows:
            assert r["images_per_s"] > 0
            assert r["images_per_s"] == pytest.approx(4 / (r["ms_per_batch"] / 1000))
            assert r["gflops"] == pytest.approx(flop_per_mac * macs * r["images_per_s"] / 1e9)
            assert r["vs_fp32"] == pytest.approx(r["images_per_s"] / base)
            assert r["vs_bf16cl"] == pytest.approx(r["images_per_s"] / amp)
    assert result["inference"][2]["note"].startswith(("bf16, eager", "fp32, eager"))
    assert result["inference"][3]["note"].endswith(", jit")


def test_table_output_and_bad_arguments(capsys):
    assert (
        main(
            [
                "bench",
                "--model",
                "resnet20",
                "--image-size",
                "16",
                "--batch-size",
                "2",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--threads",
                "1",
                "--no-compile",
                "--no-int8",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "img/s" in table and "GFLOP/s" in table and "reslab optimized" in table
    assert main(["bench", "--model", "resnet20", "--iters", "0"]) == 2
    assert "iters >= 1" in capsys.readouterr().err
    assert main(["bench", "--model", "resnet5O"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_peer_is_torchvision_with_the_same_weights():
    peer, ours, desc = peer_model("resnet18", 10, torch.device("cpu"))
    assert desc == "torchvision.models.resnet18"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), peer(x))


def test_interleaved_timing_runs_every_path_each_round():
    calls = []
    secs = time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1, torch.device("cpu")
    )
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"] and set(secs) == {"a", "b"}


def _run_benchmark(script: str, *args: str) -> str:
    """Runs ``benchmarks/<script>`` as users do; returns its stdout."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          check=True, timeout=600).stdout  # fmt: skip


@pytest.mark.slow
def test_cpu_memory_benchmark_compares_both_settings_in_fresh_processes():
    # benchmarks/bench_cpu_memory.py: one `reslab bench` process per setting; checks the
    # script runs and that each child really ran with the setting it was given.
    out = _run_benchmark("bench_cpu_memory.py", "--quick")
    assert "reslab (glibc keeps freed memory)" in out and "platform default" in out
    for path in ("peer fp32 eager", "peer bf16+cl eager", "reslab optimized"):
        assert any(line.startswith(path) and line.rstrip().endswith("x") for line in out.splitlines()), out


def test_bench_records_the_cpu_memory_setting(capsys):
    code = main(["bench", "--model", "resnet20", "--image-size", "16", "--batch-size", "2", "--iters", "1",
                 "--warmup", "1", "--threads", "1", "--no-compile", "--no-int8", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cpu_memory"] == cpu_memory.describe()  # what applies is tested in test_cpu_memory.py
    assert result["max_rss_mb"] > 0


@pytest.mark.slow
def test_layout_benchmark_runs_both_models():
    # benchmarks/bench_layouts.py --quick: the per-op and per-step comparisons run end to end
    out = _run_benchmark("bench_layouts.py", "--quick", "--threads", "1")
    assert "threshold_backward" in out and "plain ops (slice+pad" in out and "reslab (ZeroPadShortcut" in out


@pytest.mark.slow
def test_fused_kernel_benchmark_runs_both_paths():
    # benchmarks/bench_fused.py --quick: the per-op and per-step comparisons run end to end
    from reslab.models import fused

    ok, why = fused.enable()
    if not ok:
        pytest.skip(why)
    out = _run_benchmark("bench_fused.py", "--quick", "--threads", "1")
    assert "bn_add_relu: ATen" in out and "fused / ATen =" in out and "resnet20@28 batch 16" in out


@pytest.mark.slow
def test_progressive_resize_benchmark_costs_a_schedule():
    # benchmarks/bench_progressive.py --quick: per-size costs and a schedule's cost end to end
    out = _run_benchmark("bench_progressive.py", "--quick", "--threads", "1")
    assert "resnet20 (quick), batch 16: 16 px" in out and "24 px" in out and "28 px" in out
    assert "4 epochs of 16 px (epoch 1), 24 px (epoch 2), 28 px (epochs 3-4):" in out and "full-size epochs" in out


@pytest.mark.slow
def test_step_benchmark_splits_the_step_and_times_each_convolution():
    # benchmarks/bench_step.py --quick: the profiled step's buckets and resnet20's six distinct
    # 3x3 convolutions with their counts (stem, 6 at 16 channels, 5 at 32, 5 at 64, 2 strided)
    out = _run_benchmark("bench_step.py", "--quick", "--threads", "1")
    buckets = dict(re.findall(r"^  (\S.*?)\s+([\d.]+) ms\s+[\d.]+%$", out, re.M))
    assert float(buckets["convolution backward"]) > 0 and float(buckets["convolution forward"]) > 0
    assert float(buckets["BatchNorm + ReLU (+ add)"]) > 0
    counts = re.findall(r"^    (\d+)->(\d+) at (\d+) px, stride (\d) +x(\d+): (.*)$", out, re.M)
    assert [(a, b, px, s, n) for a, b, px, s, n, _ in counts] == [
        ("1", "16", "16", "1", "1"), ("16", "16", "16", "1", "6"), ("16", "32", "16", "2", "1"),
        ("32", "32", "8", "1", "5"), ("32", "64", "8", "2", "1"), ("64", "64", "4", "1", "5")]  # fmt: skip
    assert counts[0][5].split(" / ")[1] == "-"  # the stem's input needs no gradient
    assert all(cell.count("(") == 3 for *_, cell in counts[1:])
