"""``reslab models`` and ``reslab summary``: the numbers equal those of ordinary models, the
tables render as plain text in pipes and as rich tables on a terminal, and bad arguments
give errors for people.
"""

from __future__ import annotations

import io
import json
import os
import pty
from pathlib import Path

import pytest
import torch

from reslab.cli.main import main
from reslab.cli.models import counting_model, model_rows, print_table, render
from reslab.cli.summary import summarize
from reslab.models import count_params, create_model, get_spec, list_models, profile_model


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "resnext50_32x4d", "preact_resnet18",
                                  "resnet20", "wrn16_4", "preact_resnet164"])
def test_counting_model_equals_a_real_model(name):
    # the fast path (meta device for the ImageNet family) against an ordinary model's forward;
    # 224 px for resnet18, smaller elsewhere to keep the real forward pass cheap
    size = get_spec(name).input_size
    if get_spec(name).family == "imagenet" and name != "resnet18":
        size = (3, 96, 96)
    real = create_model(name).eval()
    fast = counting_model(name)
    real_stats, fast_stats = profile_model(real, size), profile_model(fast, size)
    assert [(s.name, s.kind, s.output_shape, s.params, s.macs) for s in fast_stats] == \
           [(s.name, s.kind, s.output_shape, s.params, s.macs) for s in real_stats]
    assert count_params(fast) == count_params(real)


def test_models_lists_every_architecture_and_the_docs_show_it():
    rows = model_rows()
    assert [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet18"]["params"] == 11_689_512
    assert round(by_name["resnet18"]["macs"] / 1e9, 2) == 1.81
    assert by_name["resnet50"]["params"] == 25_557_032
    assert round(by_name["resnet50"]["macs"] / 1e9, 2) == 4.09
    assert by_name["resnet20"]["input_size"] == [3, 32, 32]
    assert "He et al. 2015" in by_name["resnet20"]["paper"]
    # spot-check against an ordinary model (the real forward pass is the oracle)
    real = create_model("resnet56")
    assert by_name["resnet56"]["params"] == count_params(real)
    assert by_name["resnet56"]["macs"] == sum(s.macs for s in profile_model(real, (3, 32, 32)))
    # docs/models.md shows this very table: regenerate it with `reslab models` when it changes
    buf = io.StringIO()
    render(rows, file=buf)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert buf.getvalue().rstrip("\n") in doc


def test_models_json(capsys):
    assert main(["models", "--json", "--pattern", "resnet5*"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["resnet50", "resnet50d", "resnet56", "resnet56_b"]
    assert rows[0]["params"] == 25_557_032 and rows[0]["input_size"] == [3, 224, 224]


def test_models_family_filter_and_plain_table(capsys):
    assert main(["models", "--family", "cifar"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("model"))
    body = lines[header + 2:]
    assert [l.split()[0] for l in body] == list_models(family="cifar")
    assert set(lines[header + 1]) <= {"-", " "}  # the rule under the header
    # numbers are right-aligned: every row's params column ends at the same position
    ends = {l.index(l.split()[2]) + len(l.split()[2]) for l in body}
    assert len(ends) == 1
    assert body[0].split()[2] == f"{count_params(create_model('resnet20')):,}"
    assert "\x1b[" not in "\n".join(lines)  # no colour codes in a pipe


def test_rich_table_on_a_terminal():
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as tty:
            assert tty.isatty()
            print_table(["model", "params"], [("resnet20", "269,722")], title="t",
                        right=("params",), file=tty)
        out = os.read(master, 65536).decode()
    finally:
        os.close(master)
    assert "resnet20" in out and "269,722" in out
    assert any(ch in out for ch in "┃━│─")  # rich's box drawing, not the plain layout


def test_print_table_plain_text():
    buf = io.StringIO()
    print_table(["a", "num"], [("x", 1), ("long", 1234)], right=("num",), file=buf)
    # widths are the longest cell of each column; two spaces between columns
    assert buf.getvalue().splitlines() == ["a      num", "----  ----", "x        1", "long  1234"]


def test_summary_totals_equal_the_model(capsys):
    rc = main(["summary", "resnet18", "--input-size", "1", "96", "96", "--num-classes", "5"])
    assert rc == 0
    out = capsys.readouterr().out
    real = create_model("resnet18", num_classes=5, in_chans=1)
    stats = profile_model(real, (1, 96, 96))
    assert f"total params: {count_params(real):,}" in out
    assert f"total MACs:   {sum(s.macs for s in stats):,}" in out
    assert "layer4.1.conv2" in out and "1x512x3x3" in out  # 96 px / 32 = 3
    assert "fc" in out and "1x5" in out


def test_summary_json_and_in_chans():
    info = summarize("resnet20", in_chans=1)
    assert info["input_size"] == [1, 32, 32]
    assert info["layers"][0]["name"] == "conv1" and info["layers"][0]["params"] == 16 * 9
    assert info["params"] == sum(l["params"] for l in info["layers"])
    assert info["macs"] == sum(l["macs"] for l in info["layers"])


@pytest.mark.parametrize("argv, message", [
    (["summary", "resnet18", "--input-size", "1", "64", "64", "--in-chans", "3"], "contradicts"),
    (["summary", "resnet18", "--input-size", "3", "0", "64"], "three positive numbers"),
    (["summary", "resnt18"], "Did you mean resnet18"),
])
def test_summary_errors_are_for_people(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_model_rows_do_not_change_thread_count():
    before = torch.get_num_threads()
    model_rows(pattern="resnet20")
    assert torch.get_num_threads() == before
