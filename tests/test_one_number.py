"""One number per checkpoint: the training log, `reslab evaluate --json` and the report give
the same test accuracy, and the report says which precision each number ran in."""

from __future__ import annotations

import json
import logging
import re

import pytest

from reslab.cli.main import main
from reslab.evaluate.run_files import describe_duration, reproduce_command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # the fused kernel's first compile takes ~30 s and changes nothing this test compares
    patch = pytest.MonkeyPatch()
    patch.setenv("RESLAB_FUSED_BN", "0")
    out = tmp_path_factory.mktemp("one_number") / "run"
    # precision=auto: bf16 where the CPU has it, the case where evaluate used to disagree
    rc = main(["train", "--data", "digits", "--model", "resnet20", "--epochs", "1", "--out", str(out),
               "threads=1", "eval_test=true", "precision=auto"])  # fmt: skip
    assert rc == 0
    yield out
    patch.undo()


def test_log_evaluate_and_report_give_the_same_test_accuracy(tiny_run, tmp_path, capsys):
    logged = json.loads((tiny_run / "summary.json").read_text())["test_acc"]
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--json", "--out", str(tmp_path / "ev")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["split"] == "test"
    assert evaluated["top1"] == logged  # exactly: same precision, path, batches and tie rule
    assert "as in training" in evaluated["inference"]

    assert main(["report", "--checkpoint", str(tiny_run), "--top-losses", "0"]) == 0
    reported = json.loads((tiny_run / "evaluation" / "metrics.json").read_text())["top1"]
    assert reported == logged
    html = (tiny_run / "report.html").read_text()
    shown = f"{100 * logged:.2f}%"
    assert re.search(r"top-1 on test split \(evaluation: .*?as in training\)", html)
    assert "test accuracy in the training log (training&#x27;s evaluation:" in html
    assert html.count(f"<td>{shown}</td>") >= 2
    assert "why two test accuracies" not in html
    assert "0.0 min" not in html and " s training" in html


def test_a_fine_tuned_run_is_reproduced_with_finetune(tmp_path):
    config = {"finetune": {"pretrained": "reslab:resnet20_fashion_mnist"}}
    command = reproduce_command(tmp_path / "ft", None, config)
    assert command.startswith("reslab finetune --config ")
    assert reproduce_command(tmp_path / "r", None, {}).startswith("reslab train --config ")


def test_short_runs_show_seconds_not_zero_minutes():
    assert describe_duration({"train_time_s": 0.26, "wall_time_s": 0.32}) == "0.3 s training, 0.3 s wall time"
    assert describe_duration({"wall_time_s": 5400}) == "1.5 h wall time"


def test_train_warns_when_the_recipe_holds_finetune_keys(tmp_path, caplog):
    from reslab.cli.main import build_verb_parser
    from reslab.cli.train import build_config

    recipe = tmp_path / "ft.yaml"
    recipe.write_text("data:\n  source: digits\nfinetune:\n  pretrained: reslab:resnet20_fashion_mnist\n")
    args = build_verb_parser("train").parse_args(["--config", str(recipe)])
    with caplog.at_level(logging.WARNING, logger="reslab"):
        build_config(args)
    assert "reslab finetune --config" in caplog.text and "from scratch" in caplog.text
