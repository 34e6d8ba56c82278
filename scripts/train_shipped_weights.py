"""Reproduces reslab's shipped pretrained weights: ``reslab:resnet20_fashion_mnist``.

    python scripts/train_shipped_weights.py                  # train, verify, write the card
    python scripts/train_shipped_weights.py --device cuda    # same recipe on a GPU (minutes)

Steps: (1) ``reslab train`` on the full Fashion-MNIST training set (54,000 train /
6,000 val, stratified, seed 0); (2) copy the run's best weights (``model.safetensors``)
to ``src/reslab/weights/NAME.safetensors``; (3) load them back through
``reslab.load_pretrained("reslab:NAME")`` and measure top-1 on the official 10,000-image
test set; (4) write ``NAME.json`` (the metadata ``reslab:NAME`` reads) and ``NAME.md``
(the model card) with the command, commit, measured accuracy and the file's sha256.

On a 2-core CPU the recipe takes an estimated 2 to 4.5 hours; on one GPU, 2.5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "resnet20_fashion_mnist"
RECIPE = {  # flag -> value of `reslab train`
    "--model": "resnet20",
    "--epochs": "30",
    "--batch-size": "128",
    "--lr": "0.1",
    "--seed": "0",
}
OVERRIDES = ["model.in_chans=1"]  # Fashion-MNIST is grey; said explicitly for the record


def git_commit() -> str:
    """HEAD, marked ``+dirty`` when the working tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def train(data: str, device: str, out: Path, epochs: str | None) -> list[str]:
    """Runs ``reslab train`` with the recipe; returns the command as run."""
    recipe = dict(RECIPE, **({"--epochs": epochs} if epochs else {}))
    cmd = ["reslab", "train", "--data", data, *[x for kv in recipe.items() for x in kv],
           "--device", device, "--out", str(out), "overwrite=true", *OVERRIDES]  # fmt: skip
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "reslab", *cmd[1:]], check=True)
    return cmd


def measure_test_accuracy(name: str, weights_dir: Path, data: str, device: str) -> dict:
    """Top-1 of the shipped file, loaded the way users load it (``reslab:NAME``)."""
    import torch

    import reslab
    from reslab.data import load_dataset, make_loader
    from reslab.device import resolve_device, resolve_precision
    from reslab.engine.step import evaluate

    card = json.loads((weights_dir / f"{name}.json").read_text())
    pre = card["preprocess"]
    bundle = load_dataset(data, check=False, mean=pre["mean"], std=pre["std"], log=None)
    dev = resolve_device(device)
    model = reslab.create_model(card["architecture"], num_classes=len(card["classes"]), in_chans=1)
    reslab.load_pretrained(model, f"reslab:{name}", weights_dir=weights_dir, log=None)
    model.to(dev)
    loader = make_loader(bundle.test, batch_size=500, train=False, preprocess=pre, device=dev)
    res = {}
    for prec in ("fp32", "auto"):
        p = resolve_precision(dev, prec)
        if prec == "auto" and p.dtype is None:
            continue
        m = model.to(memory_format=torch.channels_last) if p.channels_last else model
        r = evaluate(m, loader, p)
        res[p.name] = {"top1": r["acc"], "loss": r["loss"], "images": int(r["count"])}
    return res


def write_card(name: str, weights_dir: Path, run_dir: Path, cmd: list[str], device: str, commit: str,
               test: dict, ran: list[str] | None = None) -> dict:  # fmt: skip
    """Writes NAME.json (what ``reslab:NAME`` reads) and NAME.md (for people)."""
    import yaml
    from safetensors import safe_open

    from reslab.files import hash_file

    path = weights_dir / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        n_params = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys() if not k.endswith(buffers))
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    card = {
        "name": name,
        "architecture": "resnet20",
        "model_args": json.loads(meta["model_args"]),
        "classes": json.loads(meta["classes"]),
        "preprocess": json.loads(meta["preprocess"]),
        "accuracy": {
            "test_top1": test["fp32"]["top1"],
            "test_top1_bf16": test.get("bf16", {}).get("top1"),
            "val_top1": summary["best_metric"],
            "best_epoch": summary["best_epoch"],
            "test_set": "Fashion-MNIST official test split, 10,000 images",
        },
        "params": n_params,
        "file_bytes": path.stat().st_size,
        "sha256": hash_file(path),
        "data": "Fashion-MNIST (Xiao et al. 2017): 60,000 training images split 54,000 train / "
                "6,000 val (stratified, seed 0), 28x28 grey, 10 classes",
        "command": shlex.join(cmd),
        "command_as_run": shlex.join(ran) if ran else None,
        "reproduce": "python scripts/train_shipped_weights.py" + (f" --device {device}" if device != "auto" else ""),
        "commit": commit,
        "trained_on": summary.get("precision") + _device_name(device),
        "train_time_s": summary.get("train_time_s"),
        "epochs": config["epochs"],
        "recipe": {k: config[k] for k in ("optim", "schedule", "label_smoothing", "seed")},
        "augment": config["data"]["augment"],
        "torch": __import__("torch").__version__,
        "python": platform.python_version(),
        "license": "MIT (weights trained by the reslab authors on Fashion-MNIST, MIT-licensed data)",
    }
    (weights_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    (weights_dir / f"{name}.md").write_text(render_markdown(card))
    return card


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return f", {torch.cuda.get_device_name(0)}"
    return f", {platform.processor() or platform.machine()} CPU"


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def render_markdown(card: dict) -> str:
    acc = card["accuracy"]
    bf16 = f" ({100 * acc['test_top1_bf16']:.2f}% under bf16 autocast)" if acc.get("test_top1_bf16") else ""
    r = card["recipe"]
    return f"""# Model card: `reslab:{card['name']}`

A **ResNet-20** (He et al. 2015, section 4.2: 3 stages of 3 basic blocks, widths 16/32/64,
option-A zero-padding shortcuts, {card['params']:,} parameters) for **1-channel 28x28**
images, trained from scratch by reslab on **Fashion-MNIST**. It exists so that
fine-tuning can be tried offline: `reslab finetune --pretrained reslab:{card['name']} ...`.

| | |
|---|---|
| architecture | `resnet20`, `in_chans=1`, 10 classes ({', '.join(card['classes'])}) |
| data | {card['data']} |
| input | {card['preprocess']['input_size']}, normalised with mean {card['preprocess']['mean']}, std {card['preprocess']['std']} (0..1 units) |
| **test top-1** | **{100 * acc['test_top1']:.2f}%** in fp32{bf16}, measured on {acc['test_set']} by loading this file through `reslab.load_pretrained("reslab:{card['name']}")` |
| validation top-1 | {100 * acc['val_top1']:.2f}% (best epoch {acc['best_epoch']} of {card['epochs']}, the checkpoint kept) |
| recipe | SGD (momentum {r['optim']['momentum']}, Nesterov {r['optim']['nesterov']}) lr {r['optim']['lr']}, weight decay {r['optim']['weight_decay']} (none on norm/bias), batch 128, {r['schedule']['name']} schedule, {card['epochs']} epochs, augmentation `{card['augment']}` (random 4-px pad-and-crop and horizontal flips), seed {r['seed']} |
| trained on | {card['trained_on']}, {card['train_time_s']:.0f} s of training |
| file | `{card['name']}.safetensors`, {card['file_bytes']:,} bytes |
| sha256 | `{card['sha256']}` |
| commit | `{card['commit']}` |
| software | torch {card['torch']}, Python {card['python']} |

## Reproduce

```bash
{card['reproduce']}
# which runs:
{card['command']}
```

The script trains, copies the best weights here, measures the test accuracy of the copied file
and rewrites this card and `{card['name']}.json`. GPU and CPU runs follow the same recipe but
not the same floating-point path, so a rerun lands near, not exactly on, the numbers above.

## Limits

- Fashion-MNIST is clothing photographed on a plain background, centred, 28x28 grey: the
  features transfer best to small, centred grey images (digits, sketches, icons).
- Accuracy is for the Fashion-MNIST test set only; nothing here says how it behaves on other data.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist or fashion-mnist:/folder/with/idx/files")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--epochs", help=f"override the recipe's {RECIPE['--epochs']} (for a quick check)")
    p.add_argument("--out", default=str(ROOT / "runs" / "shipped" / NAME), help="run folder")
    p.add_argument("--weights-dir", default=str(ROOT / "src" / "reslab" / "weights"))
    p.add_argument("--commit", default=None, help="commit to record (default: git HEAD of this checkout)")
    p.add_argument("--skip-train", action="store_true", help="reuse the run in --out")
    args = p.parse_args(argv)
    out, weights_dir = Path(args.out), Path(args.weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ran = None if args.skip_train else train(args.data, args.device, out, args.epochs)
    # the card shows the canonical command; a local data folder or --out do not change the result
    cmd = ["reslab", "train", "--data", "fashion-mnist", *[x for kv in RECIPE.items() for x in kv],
           "--device", args.device, "--out", f"runs/shipped/{NAME}", "overwrite=true", *OVERRIDES]  # fmt: skip
    if args.epochs:
        cmd[cmd.index("--epochs") + 1] = args.epochs
    shutil.copyfile(out / "model.safetensors", weights_dir / f"{NAME}.safetensors")
    commit = args.commit or git_commit()
    # a first card (sha256, metadata) so reslab:NAME resolves, then the measured accuracy
    write_card(NAME, weights_dir, out, cmd, args.device, commit, {"fp32": {"top1": float("nan")}}, ran)
    test = measure_test_accuracy(NAME, weights_dir, args.data, args.device)
    card = write_card(NAME, weights_dir, out, cmd, args.device, commit, test, ran)
    print(json.dumps({k: card[k] for k in ("accuracy", "sha256", "file_bytes", "params")}, indent=2))
    print(f"done in {time.time() - t0:.0f} s: {weights_dir / NAME}.{{safetensors,json,md}}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
