"""The experiments: gradient norms against an autograd oracle, the direction of the
plain-vs-residual effect on real images, the degradation driver on a seconds-long budget,
and the table/figure writers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from reslab import create_model
from reslab.data.splits import stratified_subset
from reslab.errors import ConfigError
from reslab.experiments import gradients as G
from reslab.experiments import plots
from reslab.experiments.degradation import merge_results, run_degradation, write_outputs
from reslab.experiments.headline import describe_result, summarize_runs, time_to_target
from reslab.experiments.tables import markdown_table, read_json, write_json
from reslab.experiments.transfer import batch_size_for, epochs_for, summarize

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits_batch():
    """64 real, class-balanced digits (8x8 grey), normalised as the loaders do."""
    x, y, bundle = G.real_batch("digits", 64)
    return x, y, bundle


# ---------------------------------------------------------------- test accuracy
def _accuracy_by_hand(model, batches, tta_flip):
    """The experiments' former evaluator, written out: the oracle for ``accuracy_on``."""
    correct = correct_plain = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for x, y in batches:
            plain = model(x).float()
            logits = (plain.softmax(1) + model(x.flip(3)).float().softmax(1)).log() if tta_flip else plain
            correct_plain += int((plain.argmax(1) == y).sum())
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
    return correct / total, correct_plain / total, loss_sum / total, total


@pytest.mark.parametrize("tta_flip", [False, True])
def test_accuracy_on_is_the_engines_evaluate_with_the_same_numbers(digits_batch, tta_flip):
    from reslab.engine.step import evaluate
    from reslab.experiments.evaluation import accuracy_on

    x, y, _ = digits_batch
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1)
    model.train()
    batches = [(x[i : i + 24], y[i : i + 24]) for i in range(0, len(y), 24)]  # 24, 24, 16
    got = accuracy_on(model, batches, tta_flip=tta_flip)
    assert model.training  # evaluated in eval mode, its mode restored
    acc, acc_plain, loss, n = _accuracy_by_hand(model.eval(), batches, tta_flip)
    assert (got["acc"], got["acc_plain"], got["n"]) == (acc, acc_plain, n) and n == 64
    assert got["loss"] == pytest.approx(loss, rel=1e-6)
    assert evaluate(model, batches, tta_flip=tta_flip)["acc"] == got["acc"]


# ---------------------------------------------------------------- gradient norms
def test_main_path_convs_pair_plain_with_residual():
    # resnet20_b has 1x1 projection shortcuts; they are left out so the lists line up.
    plain = G.main_path_convs(create_model("plain20", in_chans=1))
    res = G.main_path_convs(create_model("resnet20_b", in_chans=1))
    assert [n for n, _ in plain] == [n for n, _ in res]
    assert [m.weight.shape for _, m in plain] == [m.weight.shape for _, m in res]
    assert len(plain) == 19  # 6n + 1 convs: the stem and two per block (n = 3)


def test_conv_grad_norms_match_autograd(digits_batch):
    x, y, _ = digits_batch
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1).eval()
    got = G.conv_grad_norms(model, x, y)
    assert not model.training, "the caller's mode must be restored"
    assert all(p.grad is None for p in model.parameters()), "existing .grad must be left alone"
    # Oracle: the plain PyTorch way, in train mode, with .backward().
    model.train()
    F.cross_entropy(model(x), y).backward()
    want = [m.weight.grad.norm().item() for _, m in G.main_path_convs(model)]
    np.testing.assert_allclose([g.grad_norm for g in got], want, rtol=1e-4)
    np.testing.assert_allclose(
        [g.relative for g in got],
        [w / m.weight.norm().item() for w, (_, m) in zip(want, G.main_path_convs(model))],
        rtol=1e-4,
    )
    assert [g.depth for g in got] == list(range(1, len(got) + 1))


def test_plain_net_gradients_explode_towards_input_residual_stay_even(digits_batch):
    # The direction measured on a real batch (docs/results/degradation.md): with BatchNorm,
    # a deep plain net's early layers get far *larger* gradients than its late ones
    # (Yang et al. 2019), while the identity shortcut keeps a ResNet's profile nearly flat.
    x, y, _ = digits_batch
    ratio = {}
    for name in ("plain20", "plain56", "resnet56"):
        prof = G.gradient_profile(lambda: create_model(name, num_classes=10, in_chans=1), x, y, seeds=(0,))
        ratio[name] = G.early_late_ratio(prof["grad_norm"])
    assert ratio["plain56"] > 10 * ratio["resnet56"]
    assert ratio["plain56"] > 5 * ratio["plain20"], "the effect grows with depth"
    assert ratio["resnet56"] < 10


def test_gradient_profile_is_geometric_mean_over_seeds(digits_batch):
    x, y, _ = digits_batch
    prof = G.gradient_profile(lambda: create_model("resnet20", num_classes=10, in_chans=1), x, y, seeds=(0, 1))
    runs = np.array(prof["per_seed"])
    np.testing.assert_allclose(prof["grad_norm"], np.exp(np.log(runs).mean(0)), rtol=1e-9)
    assert G.spread([1.0, 4.0, 2.0]) == 4.0
    assert G.early_late_ratio([8.0, 1.0, 1.0, 2.0], fraction=0.25) == 4.0


# ---------------------------------------------------------------- degradation driver
def test_stratified_subset_balances_classes():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_subset(labels, 30, seed=0)
    assert np.bincount(labels[idx].numpy()).tolist() == [10, 10, 10]
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 30
    assert torch.equal(stratified_subset(labels, 1000, 0), torch.arange(100))


def test_degradation_rejects_bad_arguments_before_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        run_degradation("digits", models=["plain20", "resnet21"], out=tmp_path)
    with pytest.raises(ConfigError, match="epochs"):
        run_degradation("digits", models=["plain20", "resnet20"], epochs=0, out=tmp_path)
    with pytest.raises(ConfigError, match="at least one"):
        run_degradation("digits", models=[], out=tmp_path)
    assert not any(tmp_path.iterdir()), "nothing may be written before the arguments are valid"


def test_degradation_tiny_budget_end_to_end(tmp_path):
    res = run_degradation(
        "digits", models=["plain20", "resnet20"], epochs=1, subset=64, test_subset=40, val_subset=20,
        batch_size=32, grad_batch=32, grad_seeds=(0,), device="cpu", out=tmp_path, log=lambda *_: None,
    )  # fmt: skip
    assert [r["model"] for r in res["table"]] == ["plain20", "resnet20"]
    for row in res["table"]:
        assert 0.0 <= row["train_error"] <= 100.0 and 0.0 <= row["test_error"] <= 100.0
        fresh = create_model(row["model"], num_classes=10, in_chans=1)
        assert row["params"] == sum(p.numel() for p in fresh.parameters())
    assert res["setup"]["train_size"] == 64 and res["setup"]["test_size"] == 40
    assert res["curves"]["plain20"]["epoch"] == [1]
    assert len(res["grad_trained"]["resnet20"]) == 19
    assert res["table"][1]["paper_cifar10_test_error"] == 8.75
    saved = read_json(tmp_path / "degradation.json")
    assert saved["table"] == json.loads(json.dumps(res["table"]))
    for name in ("degradation_curves.png", "grad_norms_init.png", "grad_norms_trained.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("| model | params |") and "| resnet20 | 269,434 |" in table
    # the writers redraw everything from the saved JSON alone
    write_outputs(saved, tmp_path / "again")
    assert (tmp_path / "again" / "degradation_curves.png").read_bytes()[:8] == PNG


def test_degradation_runs_side_by_side_merge_into_one_comparison(tmp_path, capsys):
    from reslab.cli.main import main

    # one model per process (or GPU), then `--merge`: the same table and figures as one run
    kw = dict(epochs=1, subset=64, test_subset=40, val_subset=20, batch_size=32, grad_batch=32,
              grad_seeds=(0,), device="cpu", log=lambda *_: None)  # fmt: skip
    run_degradation("digits", models=["plain20"], out=tmp_path / "a", **kw)
    run_degradation("digits", models=["resnet20"], out=tmp_path / "b", **kw)
    assert main(["experiment", "degradation", "--merge", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(tmp_path / "all")]) == 0  # fmt: skip
    merged = read_json(tmp_path / "all" / "degradation.json")
    assert [r["model"] for r in merged["table"]] == ["plain20", "resnet20"]
    assert set(merged["curves"]) == set(merged["grad_init"]) == set(merged["grad_trained"]) == {"plain20", "resnet20"}
    assert (tmp_path / "all" / "degradation_curves.png").read_bytes()[:8] == PNG
    assert "| resnet20 | 269,434 |" in capsys.readouterr().out
    other = read_json(tmp_path / "b" / "degradation.json")
    other["setup"]["epochs"] = 2
    with pytest.raises(ConfigError, match=r"differ in \['epochs'\]"):
        merge_results([merged, other])
    with pytest.raises(ConfigError, match="more than one run"):
        merge_results([merged, read_json(tmp_path / "b" / "degradation.json")])


# ---------------------------------------------------------------- tables and figures
def test_markdown_table_and_json_roundtrip(tmp_path):
    rows = [{"a": "x", "b": 1234.5}, {"a": "y", "b": None}]
    md = markdown_table(rows, [("a", "name", "{}"), ("b", "value", "{:,.1f}")])
    assert md.splitlines() == ["| name | value |", "|---|---|", "| x | 1,234.5 |", "| y | — |"]
    path = write_json(tmp_path / "sub" / "r.json", {"rows": rows, "pi": math.pi})
    assert read_json(path) == {"rows": rows, "pi": math.pi}


def test_figures_are_written(tmp_path):
    p1 = plots.plot_accuracy_vs_time(
        {"fast": {"seconds": [10, 20, 30], "accuracy": [90, 93, 94.2]},
         "tutorial (extrapolated)": {"seconds": [100, 200], "accuracy": [88, 90], "extrapolated": True}},
        tmp_path / "t.png",
    )  # fmt: skip
    rows = [
        {"init": init, "strategy": s, "labels_per_class": n, "test_acc": acc}
        for init, s, acc in (("pretrained", "linear", 80.0), ("scratch", "full", 50.0))
        for n in (5, 20)
    ]
    p2 = plots.plot_accuracy_vs_labels(rows, tmp_path / "l.png")
    p3 = plots.plot_grad_norms({"plain56": [100.0, 10.0, 1.0], "resnet56": [1.0, 0.9, 0.8]}, tmp_path / "g.png")
    p4 = plots.plot_accuracy_vs_cost({"resnet20": [(5.0, 92.1), (10.0, 92.9)], "wrn16_2": [(6.0, 93.2)]},
                                     tmp_path / "c.png", budget=5.0)  # fmt: skip
    for p in (p1, p2, p3, p4):
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000


# ---------------------------------------------------------------- headline and transfer helpers
def test_time_to_target_and_seed_summary():
    recs = [{"test_acc": 0.90, "train_seconds": 10.0}, {"test_acc": 0.941, "train_seconds": 21.0},
            {"test_acc": 0.935, "train_seconds": 30.0}]  # fmt: skip
    assert time_to_target(recs, 0.94) == 21.0
    assert time_to_target(recs, 0.95) is None
    runs = [{"test_acc": a, "train_seconds": s, "wall_seconds": s + 1, "time_to_target": t}
            for a, s, t in ((0.94, 100.0, 90.0), (0.95, 110.0, 80.0), (0.96, 120.0, 70.0))]  # fmt: skip
    s = summarize_runs(runs)
    assert s["test_acc_mean"] == pytest.approx(0.95)
    assert s["test_acc_std"] == pytest.approx(np.std([0.94, 0.95, 0.96], ddof=1))
    assert s["time_to_target_mean"] == pytest.approx(80.0)
    for seed, r in enumerate(runs):
        r["seed"] = seed
    res = {"summary": s, "runs": runs, "target": 0.94, "tta_flip": True}
    assert describe_result(res) == (
        "test acc with flip TTA 95.00 ± 1.00% over 3 seed(s); 110 training seconds on average; "
        "94% after 80 s (1.3 min) on average (per seed: 90, 80, 70 s)")
    runs[0]["time_to_target"] = None
    assert summarize_runs(runs)["time_to_target_mean"] is None, "every seed must reach the target"
    res["summary"] = summarize_runs(runs)
    assert describe_result(res).endswith("94% not reached by every seed (seed 0 ended at 94.00%)")
    for r in runs:
        r["time_to_target"] = None
    assert describe_result(res).endswith("94% reached by no seed (seed 0 ended at 94.00%, seed 1 ended "
                                          "at 95.00%, seed 2 ended at 96.00%)")  # fmt: skip


def test_headline_command_records_every_epoch_of_every_seed(tmp_path, capsys):
    # `reslab experiment headline` end to end on the digits: a curve per seed, its summary,
    # and the one line it ends with
    from reslab.cli.main import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {source: digits, batch_size: 64, limit_train: 256, check: false}\n"
                      "model: {name: resnet20}\noptim: {name: adamw, lr: 0.003}\nepochs: 2\nthreads: 1\n")
    out = tmp_path / "h"
    assert main(["experiment", "headline", "--config", str(recipe), "--seeds", "0", "1", "--tta-flip",
                 "--target", "0.2", "--out", str(out), "device=cpu"]) == 0
    res = json.loads((out / "headline.json").read_text())
    assert [r["seed"] for r in res["runs"]] == [0, 1] and res["tta_flip"] and res["target"] == 0.2
    assert isinstance(res["fused_bn_kernel"], bool) and res["resolved"]["epochs"] == 2
    for run in res["runs"]:
        recs = run["records"]
        assert [r["epoch"] for r in recs] == [1, 2] and recs[0]["train_seconds"] < recs[1]["train_seconds"]
        assert run["test_acc"] == recs[-1]["test_acc"] and run["time_to_target"] == time_to_target(recs, 0.2)
    assert res["summary"] == summarize_runs(res["runs"])
    assert capsys.readouterr().out.rstrip().endswith(describe_result(res))


def test_transfer_budget_rules_and_summary():
    assert [batch_size_for(n) for n in (50, 200, 1150, 10_000)] == [8, 32, 64, 64]
    assert epochs_for(50, 8, steps=80) == 14  # 6 steps/epoch -> ceil(80 / 6)
    assert epochs_for(1150, 64, steps=80) == 5  # 17 steps/epoch -> ceil(80 / 17)
    assert epochs_for(10_000, 64, steps=80) == 4  # never fewer than 4
    rows = [{"init": "pretrained", "strategy": "linear", "labels_per_class": 5, "n_train": 50,
             "test_acc": a, "epochs": 14} for a in (80.0, 90.0)]  # fmt: skip
    (row,) = summarize(rows)
    assert row["test_acc"] == 85.0 and row["seeds"] == 2
    assert row["test_acc_std"] == pytest.approx(np.std([80.0, 90.0], ddof=1))


def test_transfer_rerun_merges_over_the_first_study(tmp_path, capsys):
    # a study, then some arms rerun after a fix: `--merge` keeps the rerun's result of each arm
    from reslab.cli.main import main
    from reslab.experiments import transfer

    def study(strategy_accs, seeds=(0, 1)):
        rows = [{"init": "pretrained", "strategy": st, "labels_per_class": 5, "all_labels": False,
                 "n_train": 50, "seed": sd, "test_acc": acc + sd, "val_acc": 0.0, "epochs": 25,
                 "batch_size": 8, "seconds": 1.0} for st, acc in strategy_accs for sd in seeds]  # fmt: skip
        return {"weights": "reslab:w", "architecture": "resnet20", "rows": rows,
                "summary": transfer.summarize(rows), "machine": {"cpu": "x"}}  # fmt: skip

    transfer.write_outputs(study([("linear", 50.0), ("gradual", 20.0)]), tmp_path / "first")
    transfer.write_outputs(study([("gradual", 70.0)]), tmp_path / "rerun")
    args = ["experiment", "transfer", "--merge", str(tmp_path / "first"), str(tmp_path / "rerun")]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert "| 5 | 50 | pretrained | gradual | 25 | 70.50 |" in capsys.readouterr().out
    merged = read_json(tmp_path / "all" / "transfer.json")
    assert merged["merged_from"] == 2 and len(merged["rows"]) == 4
    by_arm = {(r["strategy"], r["seed"]): r["test_acc"] for r in merged["rows"]}
    assert by_arm == {("linear", 0): 50.0, ("linear", 1): 51.0,
                      ("gradual", 0): 70.0, ("gradual", 1): 71.0}  # fmt: skip
    assert (tmp_path / "all" / "transfer.png").is_file()
    other = study([("full", 60.0)])
    other["weights"] = "timm:resnet50"
    with pytest.raises(ConfigError, match="different weights"):
        transfer.merge_results([merged, other])
    args = ["experiment", "transfer", "--merge", str(tmp_path / "nowhere")]
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    assert "no transfer.json at" in capsys.readouterr().err


def test_cli_reports_bad_model_without_traceback(capsys):
    from reslab.cli.main import main

    assert main(["experiment", "degradation", "--dataset", "digits", "--models", "plain20", "resnet7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: degradation: unknown model(s) ['resnet7']") and "Traceback" not in err


# ---------------------------------------------------------------- the headline sweep script
def _sweep_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "sweep_headline.py"
    spec = importlib.util.spec_from_file_location("sweep_headline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_sweep_job_is_a_valid_recipe(monkeypatch):
    from reslab.config import load_config
    from reslab.models import table

    monkeypatch.setattr(table, "_MODELS", dict(table._MODELS))  # the sweep's nets stay here
    sweep = _sweep_module()
    sweep.register_extra_archs()
    for name, job in sweep.JOBS.items():
        cfg = load_config(job["config"], overrides=job["overrides"])
        assert cfg.epochs >= 1, name


def test_sweep_figures_from_the_committed_results(tmp_path, monkeypatch):
    """The results page's figures redraw from docs/results/data/ and one CPU run's JSON."""
    from pathlib import Path

    sweep = _sweep_module()
    data = Path(sweep.ROOT) / "docs" / "results" / "data"
    png = sweep.figure(data / "fmnist_sweep_h100.json", data / "fmnist_cpu_cost.json", tmp_path / "s.png")
    assert png.read_bytes()[:8] == PNG
    fast = {"config": "configs/fmnist_fast.yaml", "resolved": {"threads": 1, "model": {"name": "wrn16_2"}},
            "machine": {"cores": 2}, "runs": [{"seed": 0, "records": [
        {"train_seconds": 100.0, "test_acc": 0.9, "test_acc_plain": 0.89},
        {"train_seconds": 200.0, "test_acc": 0.94, "test_acc_plain": 0.94}]}]}  # fmt: skip
    timing = {"epoch_seconds": 200.0}
    for name, obj in (("fast.json", fast), ("t.json", timing)):
        (tmp_path / name).write_text(json.dumps(obj))
    best = dict(fast, config="configs/fmnist_best.yaml")
    (tmp_path / "best.json").write_text(json.dumps(best))
    drawn = []
    original = plots.plot_accuracy_vs_time

    def spy(curves, *args, **kwargs):
        drawn.append(sorted(curves))
        return original(curves, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_accuracy_vs_time", spy)
    for measured in ([tmp_path / "fast.json"], [tmp_path / "fast.json", tmp_path / "best.json"]):
        png = sweep.figure_headline(data / "fmnist_sweep_h100.json", tmp_path / "t.json", tmp_path / "t.json",
                                    tmp_path / "h.png", measured)  # fmt: skip
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
    # a recipe trained here replaces its dotted GPU-accuracy x CPU-time estimate
    assert any(c.startswith("best (wrn28_2, 32 epochs), GPU") for c in drawn[0])
    assert not any(c.startswith("best (wrn28_2, 32 epochs), GPU") for c in drawn[1])
    assert "best (wrn16_2), seed 0, 1 thread(s): measured here" in drawn[1]
    # seeds in several files make one line, their mean, under the label given
    two = dict(fast, runs=[dict(fast["runs"][0], seed=1, records=[
        {"train_seconds": 300.0, "test_acc": 0.8, "test_acc_plain": 0.8},
        {"train_seconds": 400.0, "test_acc": 0.9, "test_acc_plain": 0.9}])])  # fmt: skip
    (tmp_path / "two.json").write_text(json.dumps(two))
    curves = {}
    monkeypatch.setattr(plots, "plot_accuracy_vs_time", lambda c, *a, **k: curves.update(c) or Path(a[0]))
    sweep.figure_headline(data / "fmnist_sweep_h100.json", tmp_path / "t.json", tmp_path / "t.json",
                          tmp_path / "h.png", [f"fast, kernel={tmp_path / 'fast.json'}+{tmp_path / 'two.json'}"])
    line = curves["fast, kernel, mean of seeds 0, 1, 1 thread(s): measured here"]
    assert line["seconds"] == [200.0, 300.0] and line["accuracy"] == [84.5, 92.0]
