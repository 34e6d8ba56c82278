"""`reslab finetune` end to end on real digits: every strategy through the engine, frozen
BatchNorm through real epochs, exact resume of gradual unfreezing, a run folder as SOURCE."""

import json
import os
import shutil
import signal

import pytest
import torch

from reslab.cli.main import main
from reslab.config import load_config
from reslab.engine import Callback, fit
from reslab.engine.signals import TrainingInterrupted
from reslab.errors import ConfigError, WeightsError
from reslab.files import load_checkpoint
from reslab.finetune import finetune
from reslab.models.checkpoint import model_from_checkpoint

FAST = ["threads=1", "precision=fp32", "data.check=false"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A real reslab run folder (resnet20 on 8x8 digits, 10 classes): the pretrained SOURCE."""
    out = tmp_path_factory.mktemp("src") / "run"
    cfg = load_config(None, overrides=["data.source=digits", "epochs=1", f"out={out}", "data.batch_size=64",
                                       "data.limit_train=256", "log_every=1000", *FAST])
    fit(cfg)
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A new task as an image folder: digits 0-4 only (5 classes, so the head must change)."""
    from reslab.data import write_digits_folder

    root = tmp_path_factory.mktemp("task") / "digits04"
    write_digits_folder(root, per_class=12, size=8)
    for split in ("train", "val", "test"):
        for d in range(5, 10):
            shutil.rmtree(root / split / str(d))
    return root


def _state(run_dir, name="last.pt"):
    return load_checkpoint(run_dir / "checkpoints" / name)


def _changed(before, after, model, group):
    """Whether any tensor of ``group`` differs between two state dicts."""
    keys = [k for k, g in model.param_group_of().items() if g == group]
    return any(not torch.equal(before[k], after[k]) for k in keys)


class _InterruptAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)


def _gradual_args(task, source, out):
    return ["finetune", "--data", str(task), "--pretrained", str(source), "--out", str(out),
            "--strategy", "gradual", "--epochs", "3", "--seed", "3", *FAST]


def test_gradual_cli_run_unfreezes_by_epoch_and_keeps_bn_frozen(task, source, tmp_path, capsys):
    out = tmp_path / "gradual"
    assert main(_gradual_args(task, source, out)) == 0
    printed = capsys.readouterr().out
    assert "bn=frozen (12 images per class < 100" in printed
    assert "skipped fc.weight: weights (10, 64) vs model (5, 64)" in printed
    for f in ("config.yaml", "classes.json", "metrics.jsonl", "metrics.csv", "model.safetensors",
              "summary.json", "log.txt", "finetune.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / f).exists(), f
    record = json.loads((out / "finetune.json").read_text())
    assert record["strategy"] == "gradual" and record["bn"] == "frozen"
    assert set(record["weights"]["skipped"]) == {"fc.weight", "fc.bias"}
    saved = load_config(out / "config.yaml")
    assert (saved.finetune.strategy, saved.finetune.bn) == ("gradual", "frozen")  # resolved, not auto
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3

    src, last = _state(source, "best.pt")["model"], _state(out)
    model = model_from_checkpoint(last)
    # epochs 0, 1, 2 trained: head; layer3 + head; layer2 + layer3 + head
    assert last["callbacks"]["0:Unfreezer"]["history"] == [
        [0, ["head"]], [1, ["layer3", "head"]], [2, ["layer2", "layer3", "head"]]]
    after = last["model"]
    assert not _changed(src, after, model, "stem") and not _changed(src, after, model, "layer1")
    assert _changed(src, after, model, "layer2") and _changed(src, after, model, "layer3")
    bn_keys = [k for k in src if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(bn_keys) == 57
    assert all(torch.equal(src[k], after[k]) for k in bn_keys)  # frozen BN: bit-identical


def test_gradual_resume_is_exact(task, source, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(_gradual_args(task, source, ref)) == 0
    cfg = load_config(None, overrides=[f"data.source={task}", f"finetune.pretrained={source}", f"out={cut}",
                                       "finetune.strategy=gradual", "epochs=3", "seed=3", *FAST])
    with pytest.raises(TrainingInterrupted):
        finetune(cfg, callbacks=[_InterruptAfterFirstEpoch()])
    assert _state(cut)["callbacks"]["0:Unfreezer"]["history"] == [[0, ["head"]]]
    assert main(["finetune", "--resume", str(cut)]) == 0
    a, b = _state(ref)["model"], _state(cut)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _state(cut)["callbacks"]["0:Unfreezer"]["history"] == _state(ref)["callbacks"]["0:Unfreezer"]["history"]


def _snapshot(folder):
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("strategy", ["linear", "gradual"])  # the cached head, and fit
def test_a_refused_resume_leaves_the_run_folder_byte_identical(task, source, tmp_path, strategy):
    """Issue 17: the settings are checked before the first write; a refused finetune resume
    used to append to log.txt first (and the cached head redid the run with the new ones)."""
    out = tmp_path / strategy
    assert main(["finetune", "--data", str(task), "--pretrained", str(source), "--out", str(out),
                 "--strategy", strategy, "--epochs", "1", *FAST]) == 0  # fmt: skip
    before = _snapshot(out)
    assert "log.txt" in before and ".reslab-run" in before
    with pytest.raises(ConfigError, match=r"(?s)cannot resume .*data.batch_size: stored 8, requested 16"):
        main_raise(["finetune", "--resume", str(out), "--batch-size", "16"])
    assert _snapshot(out) == before


def test_linear_with_cached_features_writes_a_normal_run(task, source, tmp_path, capsys):
    out = tmp_path / "linear"
    assert main(["finetune", "--data", str(task), "--pretrained", str(source), "--out", str(out),
                 "--strategy", "linear", "--epochs", "30", *FAST, "data.progressive_resize.end_epoch=2"]) == 0
    said = capsys.readouterr().out
    assert "features cached" in said and "data.progressive_resize ignored: the features are cached" in said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cached_features"] and summary["epochs_run"] == 30
    # the head trained with the step and schedule of reslab train: one row per epoch, with
    # the optimizer steps counted and the cosine schedule ending at min_lr (0)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 31)) and rows[-1]["lr"] == pytest.approx(0.0)
    assert rows[-1]["step"] == 30 * rows[0]["step"]
    # the engine's epoch line, summary line and summary.json keys, as a `reslab train` run has
    from reslab.engine.artifacts import epoch_line

    logged = (out / "log.txt").read_text().splitlines()
    assert all(any(line.startswith(epoch_line(r, 30, False)) for line in logged) for r in rows)
    assert any(line.startswith("done: best val acc ") and "img/s; run folder" in line for line in logged)
    trained = json.loads((source / "summary.json").read_text())
    assert set(summary) == set(trained) | {"cached_features", "feature_seconds", "head_seconds"}
    src = _state(source, "best.pt")["model"]
    best = _state(out, "best.pt")
    for k, v in best["model"].items():
        if not k.startswith("fc."):
            assert torch.equal(v, src[k]), k  # the backbone did not move
    # oracle for the reported test accuracy: the rebuilt model on the test images, by hand
    from reslab.data import load_dataset, make_loader

    model = model_from_checkpoint(best).eval()
    pre = best["preprocess"]
    bundle = load_dataset(task, check=False, log=None, mean=pre["mean"], std=pre["std"], image_size=pre["crop"])
    correct = total = 0
    with torch.no_grad():
        for x, y in make_loader(bundle.test, batch_size=64, train=False, preprocess=pre):
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    assert summary["test_acc"] == pytest.approx(correct / total)
    assert summary["test_acc"] > 0.5  # 5 classes: well above chance (0.2) from a linear probe


def test_the_cached_head_takes_the_run_folders_lock(task, source, tmp_path):
    """Two writers into one folder: the cached linear head is refused like `fit` is."""
    from reslab.run_folder import RunFolder

    out = tmp_path / "locked"
    args = ["finetune", "--data", str(task), "--pretrained", str(source), "--out", str(out),
            "--strategy", "linear", "--epochs", "2", *FAST]  # fmt: skip
    assert main(args) == 0
    last = (out / "checkpoints" / "last.pt").read_bytes()
    with RunFolder(out).lock():  # another writer holds the folder
        with pytest.raises(ConfigError, match=f"being written by another reslab process \\(pid {os.getpid()}\\)"):
            main_raise(["finetune", "--resume", str(out)])
    assert (out / "checkpoints" / "last.pt").read_bytes() == last


def test_discriminative_lrs_per_group_follow_the_decay(task, source, tmp_path):
    out = tmp_path / "disc"
    cfg = load_config(None, overrides=[f"data.source={task}", f"finetune.pretrained={source}", f"out={out}",
                                       "finetune.strategy=discriminative", "finetune.lr_decay=0.3",
                                       "optim.lr=0.01", "schedule.name=constant", "epochs=1", *FAST])
    result = finetune(cfg)
    # the plan comes back with the result (the demo reads its batch size from here)
    assert (result.plan.strategy, result.plan.lr_decay, result.plan.lr) == ("discriminative", 0.3, 0.01)
    assert result.plan.batch_size == json.loads((out / "finetune.json").read_text())["batch_size"]
    groups = _state(out)["optimizer"]["param_groups"]
    depth = {"stem": 4, "layer1": 3, "layer2": 2, "layer3": 1, "head": 0}
    seen = set()
    for g in groups:
        name = g["name"].split("/")[0]
        seen.add(name)
        assert g["lr"] == pytest.approx(0.01 * 0.3 ** depth[name]), g["name"]
    assert seen == set(depth)


def test_full_with_eval_bn_trains_affine_but_not_statistics(task, source, tmp_path):
    out = tmp_path / "full_eval"
    assert main(["finetune", "--data", str(task), "--pretrained", str(source), "--out", str(out),
                 "--strategy", "full", "--bn", "eval", "--epochs", "1", *FAST]) == 0
    src, after = _state(source, "best.pt")["model"], _state(out)["model"]
    for k in src:
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(src[k], after[k]), k
    assert not torch.equal(src["bn1.weight"], after["bn1.weight"])
    assert not torch.equal(src["conv1.weight"], after["conv1.weight"])


class _StopAfter(Callback):
    """Ends a run after ``epochs`` epochs, leaving its learning-rate schedule as configured."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, trainer, epoch, metrics):
        trainer.should_stop = epoch + 1 >= self.epochs


def test_gradual_with_frozen_bn_does_not_diverge_as_stages_open(tmp_path):
    """The transfer study's 20-labels arm (docs/results/transfer.md): shipped Fashion-MNIST
    weights, 20 digits per class at 28 px, batch 32, gradual with the default plan (lr 0.01,
    frozen BatchNorm), cut after the epoch that opens layer1. Without step clipping the train
    loss went 2.41, 2.28, 2.09, then 4.0 as the unnormalised stages ran away, and the run
    ended at chance."""
    from reslab.data import write_digits_folder

    data, out = tmp_path / "digits20", tmp_path / "gradual20"
    write_digits_folder(data, per_class=20, seed=0, size=28)
    cfg = load_config(None, overrides=[
        f"data.source={data}", "finetune.pretrained=reslab:resnet20_fashion_mnist", f"out={out}",
        "finetune.strategy=gradual", "data.batch_size=32", "epochs=25", "seed=0",
        "data.limit_val=100", "eval_test=false", "log_every=1000", *FAST])  # fmt: skip
    result = finetune(cfg, callbacks=[_StopAfter(5)])
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 5
    assert max(losses[1:]) < losses[0], losses  # opening layer3, layer2, layer1, stem: no jump
    assert result.history[-1]["val_acc"] > 0.4  # 10 classes: chance is 0.1
    record = json.loads((out / "finetune.json").read_text())
    assert (record["lr"], record["bn"], record["step_clip"]) == (0.01, "frozen", 0.0025)


def test_errors_come_before_any_work(task, tmp_path):
    with pytest.raises(ConfigError, match="needs --pretrained"):
        main_raise(["finetune", "--data", str(task), "--out", str(tmp_path / "x")])
    with pytest.raises(WeightsError, match="reslab:no_such_weights not found"):
        main_raise(["finetune", "--data", str(task), "--pretrained", "reslab:no_such_weights",
                    "--out", str(tmp_path / "y")])
    assert not (tmp_path / "y").exists()
    assert main(["finetune", "--data", str(task), "--out", str(tmp_path / "z")]) == 2  # printed, no traceback


def main_raise(argv):
    """Runs a CLI command and lets its ReslabError propagate (main() prints it instead)."""
    import argparse

    from reslab.cli import finetune as cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return cli.run(p.parse_args(argv[1:]))


def test_grey_weights_on_colour_images_fail_before_training_and_say_data_in_chans(tmp_path):
    """Issue 17: the shipped 1-channel weights on an RGB folder named no fix; now the refusal
    comes before any model or checkpoint, and the fix it names works."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "rgb" / split / c).mkdir(parents=True)
            for i in range(4):
                px = torch.randint(0, 255, (28, 28, 3), generator=rng, dtype=torch.uint8).numpy()
                Image.fromarray(px).save(tmp_path / "rgb" / split / c / f"{i}.png")
    args = [f"data.source={tmp_path / 'rgb'}", "finetune.pretrained=reslab:resnet20_fashion_mnist",
            "epochs=1", *FAST]
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"1-channel \(grey\).*data.in_chans=1"):
        finetune(load_config(None, overrides=[*args, f"out={out}"]))
    assert not (out / "checkpoints" / "last.pt").exists() and not (out / "config.yaml").exists()
    result = finetune(load_config(None, overrides=[*args, f"out={tmp_path / 'grey'}", "data.in_chans=1"]))
    assert result.best_metric is not None and result.plan.strategy == "gradual"
