"""MAC and parameter counts: ``count_macs`` (torch's FLOP formulas at the dispatcher, meta
device) equals ``FlopCounterMode``'s total and the per-layer hooks of ``profile_model`` (the
method ``reslab models`` used before); the shipped counts equal a live count; ``reslab models``
reads them without building a network."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from reslab.cli.models import model_rows
from reslab.models import (
    count_macs,
    count_params,
    create_model,
    get_spec,
    list_models,
    profile_model,
)
from reslab.models import counts as counts_mod

FEW = ["resnet18", "resnet50d", "resnext50_32x4d", "wide_resnet50_2", "preact_resnet18",
       "resnet20", "resnet56_b", "plain20", "wrn16_4", "preact_resnet164"]


def _meta(name: str):
    with torch.device("meta"):
        return create_model(name).eval()


@pytest.mark.parametrize("name", FEW)
def test_count_macs_equals_flop_counter_mode_and_the_per_layer_hooks(name):
    size = get_spec(name).input_size
    meta = _meta(name)
    with torch.no_grad(), FlopCounterMode(display=False) as oracle:
        meta(torch.zeros((1, *size), device="meta"))
    hooks = sum(s.macs for s in profile_model(meta, size))  # the method used before
    assert count_macs(meta, size) == oracle.get_total_flops() // 2 == hooks
    if get_spec(name).family == "cifar":  # a real CPU model gives the same
        assert count_macs(create_model(name), size) == hooks


def test_count_macs_counts_grouped_convs_and_a_folded_bias():
    # ResNeXt's grouped 3x3 convs and a conv with a bias (BatchNorm folded in for export)
    conv = torch.nn.Conv2d(64, 128, 3, padding=1, groups=32, bias=True)
    assert count_macs(conv, (64, 8, 8)) == 8 * 8 * 128 * (64 // 32) * 9
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    assert count_macs(model, (3, 2, 2)) == 12 * 5


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "resnet110", "wrn28_10"])
def test_shipped_counts_equal_a_live_count(name):
    shipped = counts_mod.table_counts([name])[name]
    model = _meta(name)
    assert shipped == {"params": count_params(model),
                       "macs": count_macs(model, get_spec(name).input_size)}


@pytest.mark.slow
def test_every_shipped_count_is_current():
    data = json.loads(counts_mod.COUNTS_FILE.read_text())
    stale = [n for n in list_models() if data.get(n, {}).get("row") != counts_mod.row_key(n)]
    assert stale == [], (f"counts.json is out of date for {stale}: run python -c 'from "
                         "reslab.models.counts import write_counts; write_counts()'")
    for name in list_models():
        assert {k: data[name][k] for k in ("params", "macs")} == counts_mod.count_live(name), name


def test_a_changed_or_missing_row_is_counted_live(tmp_path):
    live = counts_mod.count_live("resnet20")
    stale = {"resnet20": {"row": "0" * 16, "params": 1, "macs": 1}}
    (tmp_path / "counts.json").write_text(json.dumps(stale))
    assert counts_mod.table_counts(["resnet20"], path=tmp_path / "counts.json") == {"resnet20": live}
    (tmp_path / "broken.json").write_text("{not json")
    assert counts_mod.table_counts(["resnet20"], path=tmp_path / "broken.json") == {"resnet20": live}


def test_reslab_models_builds_no_network(monkeypatch):
    def refuse(name):
        raise AssertionError(f"{name} was built")

    monkeypatch.setattr(counts_mod, "count_live", refuse)
    rows = model_rows()
    assert [r["name"] for r in rows] == list_models()
    r50 = next(r for r in rows if r["name"] == "resnet50")
    assert (r50["params"], r50["macs"]) == (25557032, 4089184256)  # torchvision's 4.09 GMACs
