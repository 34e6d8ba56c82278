"""The GPU paths of issue 21, tested on CPU (where the same code runs): JPEG batches decoded
on the loader's device, the run-time choices (decode mode, compile mode, fused optimizer),
the training rows of ``reslab bench``, and the prepared GPU script's glue. The one check
that needs CUDA (no host sync per step) runs only where a GPU is present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import load_dataset, make_loader
from reslab.data.gpu_decode import DeviceDecoder, EncodedBatchDataset, choose_decode, decode_jpegs
from reslab.data.synthetic import make_image_folder
from reslab.data.transforms import resolve_augment
from reslab.engine.cuda_graphs import compile_mode_for, optimizer_speed_kwargs
from reslab.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


@pytest.fixture
def jpegs(tmp_path):
    """A streamed folder of 12 JPEGs (60x50: no draft decoding at image_size 32)."""
    make_image_folder(tmp_path / "d", ["a", "b"], per_class=6, size=(60, 50), fmt="jpg")
    return load_dataset(tmp_path / "d", image_size=32, in_memory=False, log=None, min_per_class=1, val_fraction=0.0)


def _items(paths):
    return EncodedBatchDataset(paths, torch.zeros(len(paths), dtype=torch.int64))[(0, 0, list(range(len(paths))))][0]


def test_decode_jpegs_matches_pillow(jpegs):
    paths = jpegs.train.paths[:5]
    images, kept, skipped = decode_jpegs(_items(paths), CPU, 3)
    assert kept == list(range(5)) and skipped == []
    for path, img in zip(paths, images):
        with Image.open(path) as im:
            ref = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        assert img.shape == ref.shape and img.dtype == torch.uint8
        # two libjpeg builds may round the IDCT differently: a level or two, never more on average
        assert (img.int() - ref.int()).abs().float().mean() < 1.0


def test_device_decode_eval_equals_worker_decode(jpegs):
    """decode=device and decode=workers give the same evaluation batches on CPU."""
    kw = dict(batch_size=5, train=False, preprocess=jpegs.preprocess, device="cpu", workers=0)
    with make_loader(jpegs.train, decode="device", **kw) as dev, make_loader(jpegs.train, decode="workers", **kw) as wrk:
        assert (dev.decode, wrk.decode) == ("device", "workers")
        for (xd, yd), (xw, yw) in zip(dev, wrk):
            assert torch.equal(yd, yw)
            torch.testing.assert_close(xd, xw, atol=0.05, rtol=0)  # normalised units; ~2 levels


@pytest.mark.parametrize("augment", ["default", "crop", {"crop": "pad", "pad": 4}])
def test_device_decode_training_batches(jpegs, augment):
    kw = dict(batch_size=4, train=True, preprocess=jpegs.preprocess, device="cpu", workers=0,
              decode="device", augment=augment)  # fmt: skip
    with make_loader(jpegs.train, **kw) as a, make_loader(jpegs.train, **kw) as b:
        x1, y1 = next(iter(a))
        x2, y2 = next(iter(b))
        assert x1.shape == (4, 3, 32, 32) and x1.dtype == torch.float32
        assert torch.equal(x1, x2) and torch.equal(y1, y2)  # depends only on (seed, epoch, batch)
        a.set_epoch(1)
        assert not torch.equal(next(iter(a))[0], x1)  # a new epoch draws new crops


def test_corrupt_and_mislabelled_files(jpegs, tmp_path, caplog):
    """A file broken after loading is skipped by name with a warning; a PNG named .jpg is
    read by Pillow instead of failing the batch."""
    paths = jpegs.train.paths
    Path(paths[0]).write_bytes(b"\xff\xd8\xff" + b"not a jpeg at all" * 10)
    Image.new("RGB", (60, 50), (200, 10, 10)).save(paths[1], format="PNG")
    images, kept, skipped = decode_jpegs(_items(paths[:3]), CPU, 3)
    assert kept == [1, 2] and [p for p, _ in skipped] == [paths[0]]
    assert skipped[0][1]  # a reason, not an empty string
    assert images[0][:, 0, 0].tolist() == [200, 10, 10]
    logged = []
    loader = make_loader(jpegs.train, batch_size=12, train=False, preprocess=jpegs.preprocess, device="cpu",
                         workers=0, decode="device", log=logged.append)  # fmt: skip
    (x, y), = list(loader)
    assert len(x) == len(y) == 11
    assert [p for p, _ in loader.skipped] == [paths[0]]
    assert len(logged) == 1 and "skipped 1 unreadable file" in logged[0] and paths[0] in logged[0]


def test_choose_decode_rules(jpegs, tmp_path):
    spec = resolve_augment("default", jpegs.preprocess)
    paths = jpegs.train.paths
    assert choose_decode("auto", CPU, paths, spec) == "workers"  # CPU: workers decode
    assert choose_decode("auto", torch.device("cuda"), paths, spec) == "device"  # chosen, not run
    assert choose_decode("auto", torch.device("cuda"), [*paths, "x.png"], spec) == "workers"
    with pytest.raises(ConfigError, match=r"received 'x\.png'.*decode=workers"):
        choose_decode("device", CPU, [*paths, "x.png"], spec)
    with pytest.raises(ConfigError, match="trivial"):
        choose_decode("device", CPU, paths, resolve_augment("trivial", jpegs.preprocess))
    with pytest.raises(ConfigError, match="decode='gpu'"):
        choose_decode("gpu", CPU, paths, spec)


def test_decoder_all_files_bad(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    pre = {"resize": 32, "crop": 32, "input_size": [3, 32, 32]}
    dec = DeviceDecoder(pre, resolve_augment("default", {**pre, "mean": [0], "std": [1]}), True, CPU, 0)
    x, y, skipped = dec(_items([str(bad)]), torch.tensor([0]), 0, 0)
    assert x.shape == (0, 3, 32, 32) and len(y) == 0 and skipped[0][0] == str(bad)


def test_compile_mode_falls_back_off_cuda():
    assert compile_mode_for("reduce-overhead", torch.device("cuda")) == ("reduce-overhead", None)
    mode, why = compile_mode_for("reduce-overhead", CPU)
    assert mode == "default" and "CUDA graphs" in why
    assert compile_mode_for("max-autotune", CPU)[0] == "max-autotune-no-cudagraphs"
    with pytest.raises(ConfigError, match="compile_mode='fastest'"):
        compile_mode_for("fastest", CPU)


def test_fused_optimizer_kwargs_on_cpu():
    params = [torch.nn.Parameter(torch.zeros(3))]
    kwargs, why = optimizer_speed_kwargs(params, True)
    assert kwargs == {"fused": True} and why is None  # PyTorch >= 2.4 fuses SGD on CPU too
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, **kwargs)
    params[0].grad = torch.ones(3)
    opt.step()
    assert torch.allclose(params[0].detach(), torch.full((3,), -0.1))
    assert optimizer_speed_kwargs(params, False) == ({"foreach": True}, None)
    meta = [torch.nn.Parameter(torch.zeros(3, device="meta"))]
    kwargs, why = optimizer_speed_kwargs(meta, True)
    assert kwargs == {"foreach": True} and "no fused optimizer kernels for meta" in why
    assert optimizer_speed_kwargs(meta, None) == ({"foreach": True}, None)  # auto: silent


def test_bench_train_rows_on_cpu():
    from reslab.export.throughput_vs_torchvision import run_bench

    res = run_bench("resnet20", batch_size=2, image_size=32, mode="train", iters=1, warmup=1, device="cpu",
                    num_classes=10, log=None, fused=True)  # fmt: skip
    names = [r["name"] for r in res["train"]]
    assert names[:2] == ["peer fp32 eager", next(n for n in names if n.endswith("+cl eager"))]
    engine = [r for r in res["train"] if r["name"].startswith("reslab engine step")]
    assert len(engine) == 1 and engine[0]["images_per_s"] > 0 and "fused SGD" in engine[0]["note"]


def test_gpu_check_script_glue(tmp_path):
    subprocess.run(["bash", "-n", str(ROOT / "scripts/gpu_check.sh")], check=True)
    work = tmp_path / "work"
    for lr, acc in (("0.4", 0.93), ("0.8", 0.95)):
        (work / f"lr{lr}").mkdir(parents=True)
        (work / f"lr{lr}" / "headline.json").write_text(json.dumps({"runs": [{"test_acc": acc, "train_seconds": 9}]}))
    dest = tmp_path / "sweep.json"
    out = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check.py"), "--pick-lr", str(work), str(dest),
                          "0.4", "0.8", "1.2"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.strip() == "0.8"
    table = json.loads(dest.read_text())
    assert table["best_lr"] == 0.8 and table["rows"][2]["test_acc"] is None  # 1.2 never finished


def test_gpu_recipe_loads():
    from reslab.config import load_config

    cfg = load_config(ROOT / "configs/fmnist_fast_gpu.yaml", ["compile=true", "compile_mode=reduce-overhead"])
    assert cfg.data.batch_size == 512 and cfg.compile_mode == "reduce-overhead" and cfg.data.decode == "auto"
    with pytest.raises(ConfigError, match="data.decode"):
        load_config(ROOT / "configs/fmnist_fast_gpu.yaml", ["data.decode=gpu"])


def test_resume_may_switch_the_speed_options():
    """compile_mode and data.decode change how fast a run goes, not what it learns; a run
    stored before they existed resumes too."""
    from reslab.config.resume import resume_changes

    old = {"compile": False, "data": {"workers": 2}}
    new = {"compile": True, "compile_mode": "reduce-overhead", "data": {"workers": 2, "decode": "device"}}
    allowed, refused = resume_changes(old, new)
    assert refused == [] and len(allowed) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_sync_per_step_on_cuda():
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    res = gpu_check.check_no_sync(torch.device("cuda"), data="digits", batch=64, steps=5)
    assert res["eager"]["host_syncs_error"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_jpeg_batches_decoded_on_cuda_match_the_cpu_workers():
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    gpu_check.check_decode(torch.device("cuda"))
