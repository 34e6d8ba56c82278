"""``reslab train`` and ``reslab lr-find`` end to end through the CLI entry point, and
``lr_find`` against its own contract (the model's weights come back untouched)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import reslab
from reslab.cli.main import main
from reslab.config import load_config
from reslab.engine import lr_find
from reslab.engine.lr_finder import suggest
from reslab.files import load_checkpoint

FAST = ["data.check=false", "data.limit_train=256", "data.limit_val=64", "threads=1"]


def test_train_cli_flags_resume_and_extend(tmp_path, capsys):
    run = tmp_path / "run"
    # overrides may sit between flags
    code = main(["train", "--data", "digits", "optim.weight_decay=1e-4", "--model", "resnet20", "--epochs", "1",
                 "--batch-size", "32", "--lr", "0.05", "--seed", "4", "--out", str(run), "--device", "cpu",
                 *FAST])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    cfg = load_config(run / "config.yaml")
    assert (cfg.epochs, cfg.data.batch_size, cfg.optim.lr, cfg.seed) == (1, 32, 0.05, 4)
    assert cfg.optim.weight_decay == 1e-4 and cfg.data.source == "digits"
    assert "precision: cpu" in out and "done: best val acc" in out

    # resume a finished run with more epochs: it continues from epoch 2 and says what changed
    code = main(["train", "--resume", str(run), "--epochs", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "resuming" in out and "epochs: 1 -> 2" in out
    assert load_checkpoint(run / "checkpoints" / "last.pt")["sampler"]["epoch"] == 2
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]

    # a second fresh run into the same folder is refused, with the fix in the message
    code = main(["train", "--data", "digits", "--out", str(run), *FAST])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_a_missing_data_source_is_refused_before_the_kernel_is_built(tmp_path, capsys, monkeypatch):
    # the first load of the fused kernel on a machine compiles it (~30 s): bad data fails first
    from reslab.models import fused

    calls = []
    monkeypatch.setattr(fused, "enable_for", lambda *a, **k: calls.append(a))
    code = main(["train", "--data", str(tmp_path / "no_such_folder"), "--out", str(tmp_path / "run"),
                 "--device", "cpu", "--precision", "bf16", "threads=1"])  # fmt: skip
    assert code == 2 and "is neither a file, a folder nor a built-in dataset" in capsys.readouterr().err
    assert calls == []
    code = main(["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "run2"),
                 "--device", "cpu", "--precision", "bf16", *FAST])  # fmt: skip
    assert code == 0 and len(calls) == 1


def test_train_cli_on_an_image_folder(tmp_path, capsys):
    # a real folder of PNGs (root/<class>/*.png): 3 classes told apart by brightness
    gen = torch.Generator().manual_seed(0)
    for c, level in enumerate((40, 128, 215)):
        d = tmp_path / "imgs" / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(24):
            noise = torch.randint(-30, 30, (12, 12, 3), generator=gen)
            Image.fromarray((noise + level).clamp(0, 255).to(torch.uint8).numpy()).save(d / f"{i}.png")
    code = main(["train", "--data", str(tmp_path / "imgs"), "--model", "resnet20", "--epochs", "3",
                 "--batch-size", "16", "--out", str(tmp_path / "run"), "threads=1", "data.val_fraction=0.25",
                 "optim.name=adamw", "optim.lr=3e-3"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_metric"] > 0.6
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["class_0", "class_1", "class_2"]


def test_lr_find_cli_writes_plot_and_suggestion(tmp_path, capsys):
    code = main(["lr-find", "--data", "digits", "--model", "resnet20", "--batch-size", "32",
                 "--out", str(tmp_path), "--steps", "60", "--start-lr", "1e-5", "--end-lr", "10",
                 "data.check=false", "threads=1", "optim.name=sgd"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    res = json.loads((tmp_path / "lr_find.json").read_text())
    assert 1e-5 <= res["suggestion"] <= 10 and "suggested lr" in out
    assert len(res["lrs"]) == len(res["losses"]) >= 20
    with Image.open(tmp_path / "lr_find.png") as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_lr_find_restores_the_model_and_stops_on_divergence(tmp_path):
    cfg = load_config(None, ["data.source=digits", "data.batch_size=32", *FAST])
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr_find(cfg, model=model, start_lr=1e-4, end_lr=1e4, num_steps=80, log=lambda m: None)
    assert res.stopped_early and res.lrs[-1] < 1e4  # lr 1e4 diverges long before the end
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_suggest_on_a_known_curve():
    # loss = plateau, then falls fastest at lr = 1e-2 (a tanh in log-lr), then explodes after 1
    lrs = torch.logspace(-5, 1, 121)
    x = torch.log10(lrs)
    loss = 2 - torch.tanh((x + 2) * 2) + torch.where(x > 0, 40 * x**2, torch.zeros_like(x))
    steep, min10 = suggest(lrs.tolist(), loss.tolist())
    assert steep == pytest.approx(1e-2, rel=0.15)
    assert min10 == pytest.approx(lrs[int(loss.argmin())].item() / 10)
