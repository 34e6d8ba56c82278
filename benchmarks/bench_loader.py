"""Is the loader ever the bottleneck? Images/s delivered by each loader vs images/s consumed
by a training step, measured side by side in one process.

Cases (issue 3, section 4):
  * Fashion-MNIST, 28 px: in-memory loader vs resnet20 training (bf16 + channels_last on
    CPUs with native bf16, else fp32). Goal: delivery >= 3x consumption.
  * a generated folder of 224 px JPEG photos: streaming loader (DataLoader workers) and the
    in-memory loader (decoded once, cached) vs resnet50 training.
  * per-image decode: Pillow full decode, Pillow draft decode, torchvision.io (libjpeg-turbo).

Prints a table with the delivery / consumption ratios and writes JSON to
benchmarks/results/loader.json.

    python benchmarks/bench_loader.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_loader.py --quick    # smoke run (seconds; writes nothing)
    python benchmarks/bench_loader.py --device cuda --out OUT/loader_cuda.json   # + device-jpeg
    python benchmarks/bench_loader.py --quick --device cpu --cases device-jpeg   # its CPU smoke
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import call_times, write_json  # benchmarks/common.py

from reslab import create_model
from reslab.data import load_dataset, make_loader
from reslab.data.synthetic import make_image_folder
from reslab.device import resolve_device, resolve_precision, set_cpu_threads


def rate_of(fn, n_images: int, repeats: int) -> float:
    """Best-of-``repeats`` images/s of ``fn()`` processing ``n_images`` (first call warms up)."""
    return n_images / min(call_times(fn, repeats, warmup=1))


def delivery(loader, batches: int) -> tuple[callable, int]:
    """A function pulling ``batches`` batches from ``loader`` (a fresh epoch each call)."""
    state = {"epoch": 0}
    batch_size = loader.batch_size

    def pull():
        state["epoch"] += 1
        loader.set_epoch(state["epoch"])
        for i, (x, _) in enumerate(loader):
            if i + 1 >= batches:
                break
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return pull, batches * batch_size


def consumption(model, precision, x, y, steps: int) -> tuple[callable, int]:
    """A function running ``steps`` SGD training steps on one fixed batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()

    def train():
        for _ in range(steps):
            with precision.autocast():
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return train, steps * len(x)


def end_to_end(model, precision, loader, batches: int) -> tuple[callable, int]:
    """Loader and training step together, the way a run uses them."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
    state = {"epoch": 100}

    def run():
        state["epoch"] += 1
        loader.set_epoch(state["epoch"])
        for i, (x, y) in enumerate(loader):
            with precision.autocast():
                loss = loss_fn(model(x.contiguous(memory_format=fmt)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i + 1 >= batches:
                break

    return run, batches * loader.batch_size


def decode_rates(paths: list[str], size: int, repeats: int) -> dict[str, float]:
    """Images/s of three ways to decode a JPEG and resize its shorter side to ``size``."""
    import numpy as np
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    from reslab.data.images import load_image_tensor

    def pil_full():
        for p in paths:
            with Image.open(p) as im:
                x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
            TF.resize(x, size, antialias=True)

    def torchvision_io():
        for p in paths:
            x = decode_jpeg(read_file(p), mode=ImageReadMode.RGB, apply_exif_orientation=True)
            TF.resize(x, size, antialias=True)

    def reslab_decoder():
        for p in paths:
            TF.resize(load_image_tensor(p, 3, target_size=size), size, antialias=True)

    return {name: rate_of(fn, len(paths), repeats) for name, fn in
            [("pil_full", pil_full), ("torchvision_io", torchvision_io), ("reslab (draft/tv)", reslab_decoder)]}


def fashion_case(args, device, precision) -> dict:
    bundle = load_dataset("fashion-mnist", log=None)
    model = create_model("resnet20", num_classes=10, in_chans=1).to(device)
    bs = args.batch_size
    loader = make_loader(bundle.train, batch_size=bs, train=True, preprocess=bundle.preprocess, device=device)
    x, y = next(iter(loader))
    pull, n_pull = delivery(loader, args.fm_batches)
    train, n_train = consumption(model, precision, x, y, args.fm_steps)
    both, n_both = end_to_end(model, precision, loader, args.fm_steps)
    # interleave so both see the same machine state; best of each
    d, c = [], []
    for _ in range(args.repeats):
        d.append(rate_of(pull, n_pull, 1))
        c.append(rate_of(train, n_train, 1))
    deliver, consume = max(d), max(c)
    e2e = rate_of(both, n_both, 1)
    return {
        "case": "fashion-mnist 28px, in-memory loader vs resnet20", "batch_size": bs,
        "delivered_img_s": round(deliver), "consumed_img_s": round(consume),
        "ratio": round(deliver / consume, 2), "end_to_end_img_s": round(e2e),
        "loader_overhead": round(1 - e2e / consume, 3), "goal_ratio": 3.0,
        "meets_goal": deliver / consume >= 3.0,
    }  # fmt: skip


def jpeg_case(args, device, precision) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="reslab-bench-"))
    os.environ.setdefault("RESLAB_CACHE_DIR", str(tmp / "cache"))
    make_image_folder(tmp / "photos", [f"c{i}" for i in range(4)], per_class=args.jpeg_per_class,
                      size=(500, 375), fmt="jpg", quality=90)  # fmt: skip
    bs = args.jpeg_batch
    model = create_model("resnet50", num_classes=4).to(device)
    out = []
    stream = load_dataset(tmp / "photos", image_size=224, in_memory=False, log=None, min_per_class=1)
    with make_loader(stream.train, batch_size=bs, train=True, preprocess=stream.preprocess,
                     device=device, workers=args.workers) as sl:  # fmt: skip
        x, y = next(iter(sl))
        pull, n_pull = delivery(sl, min(len(sl), args.jpeg_batches))
        deliver = rate_of(pull, n_pull, args.repeats)
    train, n_train = consumption(model, precision, x, y, args.jpeg_steps)
    consume = rate_of(train, n_train, args.repeats)
    out.append({"case": f"224px JPEG folder, streaming loader ({args.workers} workers) vs resnet50",
                "batch_size": bs, "delivered_img_s": round(deliver, 1), "consumed_img_s": round(consume, 1),
                "ratio": round(deliver / consume, 2)})  # fmt: skip
    t0 = time.perf_counter()
    mem = load_dataset(tmp / "photos", image_size=224, in_memory=True, log=None, min_per_class=1)
    decode_s = time.perf_counter() - t0
    ml = make_loader(mem.train, batch_size=bs, train=True, preprocess=mem.preprocess, device=device)
    pull, n_pull = delivery(ml, min(len(ml), args.jpeg_batches))
    deliver = rate_of(pull, n_pull, args.repeats)
    out.append({"case": "224px JPEG folder, in-memory loader (decoded once) vs resnet50",
                "batch_size": bs, "delivered_img_s": round(deliver, 1), "consumed_img_s": round(consume, 1),
                "ratio": round(deliver / consume, 2), "first_decode_s": round(decode_s, 2)})  # fmt: skip
    paths = sorted(str(p) for p in (tmp / "photos").rglob("*.jpg"))[: args.decode_images]
    rates = decode_rates(paths, 232, args.repeats)
    out.append({"case": "decode 500x375 JPEG + resize to 232 (images/s, 1 process)",
                **{k: round(v, 1) for k, v in rates.items()}})  # fmt: skip
    return out


def device_jpeg_case(args, device, precision) -> list[dict]:
    """Issue 21, goal 3: a folder of 500x375 JPEG photos decoded in batches on the device
    (``decode="device"``: nvJPEG on CUDA; the same code on CPU decodes with libjpeg-turbo)
    and by CPU worker processes (``decode="workers"``), against resnet50 training at the same
    batch in the engine's precision. Goal: device delivery >= 1.5x consumption. The files
    sit in the page cache after the first epoch, so this measures decoding, not the disk."""
    tmp = Path(tempfile.mkdtemp(prefix="reslab-bench-"))
    make_image_folder(tmp / "photos", [f"c{i}" for i in range(4)], per_class=args.dev_per_class,
                      size=(500, 375), fmt="jpg", quality=90)  # fmt: skip
    stream = load_dataset(tmp / "photos", image_size=224, in_memory=False, log=None, min_per_class=1,
                          val_fraction=0.0)  # fmt: skip
    bs, rows = args.dev_batch, []
    for decode in ("device", "workers"):
        with make_loader(stream.train, batch_size=bs, train=True, preprocess=stream.preprocess,
                         device=device, workers=args.workers, decode=decode) as ld:  # fmt: skip
            x, y = next(iter(ld))
            pull, n_pull = delivery(ld, min(len(ld), args.dev_batches))
            rows.append((decode, rate_of(pull, n_pull, args.repeats)))
    model = create_model("resnet50", num_classes=4).to(device)
    train, n_train = consumption(model, precision, x, y, args.dev_steps)
    consume = rate_of(train, n_train, args.repeats)
    where = {"device": f"decoded on {device} in batches", "workers": f"{args.workers} CPU decoder workers"}
    return [{"case": f"500x375 JPEG -> 224 px, {where[d]} vs resnet50 ({precision.describe()})",
             "decode": d, "batch_size": bs, "delivered_img_s": round(rate, 1),
             "consumed_img_s": round(consume, 1), "ratio": round(rate / consume, 2),
             "goal_ratio": 1.5 if d == "device" else None} for d, rate in rows]  # fmt: skip


def show(c: dict) -> None:
    """One table row."""
    if "ratio" in c:
        print(f"{c['case']:<72} {c['delivered_img_s']:>10} {c['consumed_img_s']:>10} {c['ratio']:>6}x", flush=True)
    else:
        rest = ", ".join(f"{k} {v}" for k, v in c.items() if k != "case")
        print(f"{c['case']:<72} {rest}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "loader.json"))
    p.add_argument("--cases", nargs="+", choices=["fashion", "jpeg", "device-jpeg"], default=None,
                   help="default: fashion jpeg, plus device-jpeg on CUDA")
    p.add_argument("--workers", type=int, default=None, help="decoder processes (default 2; all cores on CUDA)")
    args = p.parse_args(argv)
    q = args.quick
    args.batch_size, args.repeats = 256, 2 if q else 3
    args.fm_batches, args.fm_steps = (10, 2) if q else (100, 8)
    args.jpeg_per_class, args.jpeg_batch = (8, 8) if q else (64, 32)
    args.jpeg_batches, args.jpeg_steps = (2, 1) if q else (8, 2)
    args.decode_images = 8 if q else 64
    args.dev_per_class, args.dev_batch = (4, 4) if q else (384, 256)
    args.dev_batches, args.dev_steps = (2, 1) if q else (6, 3)

    threads = set_cpu_threads()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.workers is None:
        args.workers = 2 if q or not cuda else len(os.sched_getaffinity(0))
    cases = args.cases or (["fashion", "jpeg", "device-jpeg"] if cuda else ["fashion", "jpeg"])
    precision = resolve_precision(device, args.precision)
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads,
                    "device": str(device), "precision": precision.describe(),
                    "torch": torch.__version__, "python": sys.version.split()[0]},
        "quick": q,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cases": [],
    }  # fmt: skip
    print(f"machine: {results['machine']}")
    print(f"{'case':<72} {'delivered':>10} {'consumed':>10} {'ratio':>7}", flush=True)
    if "fashion" in cases:
        results["cases"].append(fashion_case(args, device, precision))
        show(results["cases"][-1])
        fm = results["cases"][-1]
        print(f"Fashion-MNIST: delivery / resnet20 consumption = {fm['ratio']}x (goal >= 3x); "
              f"end-to-end {fm['end_to_end_img_s']} img/s, loader overhead {fm['loader_overhead']:.1%}")  # fmt: skip
    for name, fn in (("jpeg", jpeg_case), ("device-jpeg", device_jpeg_case)):
        if name in cases:
            for case in fn(args, device, precision):
                results["cases"].append(case)
                show(case)
    if not args.quick:  # a smoke run never overwrites the recorded figures
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
