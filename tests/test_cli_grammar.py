"""One CLI grammar: the same flags in every verb, defaults in --help, --json where a verb
produces a result, one set of --precision choices, "did you mean", shell completion."""

from __future__ import annotations

import argparse
import logging
import subprocess

import pytest

from reslab.cli.main import COMMANDS, build_verb_parser, main
from reslab.cli.options import PRECISIONS

RESULT_VERBS = ["recipes", "summary", "check", "train", "lr-find", "finetune", "evaluate",
                "explain", "report", "predict", "export", "bench"]  # fmt: skip
CHECKPOINT_VERBS = ["evaluate", "explain", "report", "predict", "export"]


def flags(verb: str) -> dict[str, argparse.Action]:
    return {s: a for a in build_verb_parser(verb)._actions for s in a.option_strings}


def test_a_mistyped_verb_gets_a_suggestion(capsys):
    assert main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err
    assert main(["xyzzy"]) == 2
    assert "choose from" in capsys.readouterr().err


@pytest.mark.parametrize("verb", RESULT_VERBS)
def test_every_verb_with_a_result_takes_json(verb):
    assert "--json" in flags(verb)


@pytest.mark.parametrize("verb", CHECKPOINT_VERBS)
def test_checkpoint_verbs_take_checkpoint(verb):
    assert "--checkpoint" in flags(verb)


def test_report_takes_checkpoint_and_keeps_the_positional():
    p = build_verb_parser("report")
    assert p.parse_args(["--checkpoint", "runs/a"]).checkpoint == "runs/a"
    assert p.parse_args(["runs/a"]).run_dir == "runs/a"


@pytest.mark.parametrize("verb", [v for v in COMMANDS if v not in ("experiment", "completion")])
def test_one_set_of_precision_choices(verb):
    action = flags(verb).get("--precision")
    if action is not None:
        assert set(PRECISIONS) <= set(action.choices), (verb, action.choices)


def test_a_verb_that_cannot_do_a_precision_says_why(capsys):
    assert main(["export", "--checkpoint", "nowhere", "--format", "onnx", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "fp16" in err and "use one of auto, fp32, bf16" in err


def test_experiment_speaks_the_standard_names_and_keeps_the_old_ones():
    p = build_verb_parser("experiment")
    new = p.parse_args(["gradients", "--data", "digits", "--batch-size", "8", "--seed", "0", "1"])
    old = p.parse_args(["gradients", "--dataset", "digits", "--batch", "8", "--seeds", "0", "1"])
    assert (new.dataset, new.batch, new.seeds) == (old.dataset, old.batch, old.seeds) == ("digits", 8, [0, 1])
    assert p.parse_args(["gradients"]).dataset == "fashion-mnist"
    help_text = build_verb_parser("experiment")._subparsers._group_actions[0].choices["gradients"].format_help()
    assert "--dataset" not in help_text and "--seeds" not in help_text  # hidden aliases


@pytest.mark.parametrize("verb, expected", [("train", "(default: 10, or the recipe's)"),
                                            ("report", "(default: 8)"),
                                            ("predict", "(default: 64)")])  # fmt: skip
def test_help_shows_defaults(verb, expected):
    assert expected in " ".join(build_verb_parser(verb).format_help().split())


def test_quiet_and_verbose_set_the_reslab_logger(capsys):
    assert main(["-q", "recipes"]) == 0
    assert logging.getLogger("reslab").level == logging.WARNING
    assert main(["recipes", "--verbose"]) == 0
    assert logging.getLogger("reslab").level == logging.DEBUG
    assert main(["recipes"]) == 0
    assert logging.getLogger("reslab").level == logging.INFO


def test_bash_completion_completes_verbs_flags_and_choices(tmp_path, capsys):
    script = tmp_path / "reslab.bash"
    assert main(["completion", "bash"]) == 0
    script.write_text(capsys.readouterr().out)

    def complete(*words: str) -> list[str]:
        cmd = (f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
               f"COMP_CWORD={len(words) - 1}; _reslab; echo \"${{COMPREPLY[@]}}\"")  # fmt: skip
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                              check=True).stdout.split()  # fmt: skip

    assert complete("reslab", "tra") == ["train"]
    assert complete("reslab", "evaluate", "--chec") == ["--checkpoint"]
    assert complete("reslab", "evaluate", "--precision", "") == list(PRECISIONS)
    assert complete("reslab", "export", "--format", "o") == ["onnx"]
    assert complete("reslab", "experiment", "hea") == ["headline"]


def test_zsh_completion_wraps_the_bash_function(capsys):
    assert main(["completion", "zsh"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#compdef reslab") and "bashcompinit" in text and "_reslab()" in text


def test_train_and_export_json_leave_only_the_document_on_stdout(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("RESLAB_FUSED_BN", "0")  # its first compile (~30 s) is not under test
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "resnet20", "--epochs", "1", "--out", str(run),
                 "--json", "threads=1"]) == 0  # fmt: skip
    out = capsys.readouterr()
    summary = json.loads(out.out)  # the epoch lines went to stderr
    assert summary["epochs_run"] == 1 and "epoch 1/1" in out.err
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--json",
                 "--parity-images", "32"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["model_path"].endswith("model.pt") and result["parity"]["n"] == 32
