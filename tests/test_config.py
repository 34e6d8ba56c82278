"""The typed config: YAML + overrides, precedence, and errors that name the key, the
received value and the allowed values before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reslab.cli.main import main
from reslab.config import FinetuneConfig, TrainConfig, load_config, parse_overrides, save_config
from reslab.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "src/reslab/recipes").glob("*.yaml"))


def test_yaml_then_overrides_take_precedence(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\noptim: {name: adamw, lr: 0.01}\ndata: {source: digits, batch_size: 32}\n")
    cfg = load_config(recipe, ["optim.lr=3e-3", "ema=true", "log=tensorboard,wandb", "data.mixup=0.2"])
    assert cfg.epochs == 7 and cfg.optim.name == "adamw" and cfg.optim.lr == 3e-3
    assert cfg.data.batch_size == 32 and cfg.data.mixup == 0.2 and cfg.data.source == "digits"
    assert cfg.ema.enabled and cfg.ema.decay == 0.999
    assert cfg.log == ["tensorboard", "wandb"]
    assert cfg.optim.momentum == TrainConfig().optim.momentum  # untouched keys keep defaults
    nested = load_config(recipe, {"optim": {"lr": 0.5}, "schedule.name": "step", "early_stop": 3})
    assert nested.optim.name == "adamw" and nested.optim.lr == 0.5 and nested.schedule.name == "step"
    assert nested.early_stop.patience == 3


def test_round_trip_through_saved_yaml(tmp_path):
    cfg = load_config(None, ["data.source=fashion-mnist", "finetune.strategy=gradual", "clip_grad=2",
                             "schedule.milestones=[0.3,0.6,0.9]"])  # fmt: skip
    assert isinstance(cfg.finetune, FinetuneConfig) and cfg.finetune.strategy == "gradual"
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["clip_grad"] == 2.0


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.name=sgdd", ["optim.name", "'sgdd'", "'sgd'", "'adamw'"]),
        ("schedule.name=linear", ["schedule.name", "'linear'", "'cosine'", "'onecycle'"]),
        ("precision=fp8", ["precision", "'fp8'", "'bf16'", "'fp32'"]),
        ("finetune.bn=freeze", ["finetune.bn", "'freeze'", "'frozen'", "'eval'"]),
        ("log=tensorboard,comet", ["log.1", "'comet'", "'mlflow'", "'wandb'"]),
        ("epochs=0", ["epochs", "received 0", "greater than or equal to 1"]),
        ("optim.momentum=1.5", ["optim.momentum", "1.5", "less than 1"]),
        ("label_smoothing=abc", ["label_smoothing", "'abc'", "valid number"]),
        ("model.name=resnet21", ["model.name", "'resnet21'", "resnet20", "reslab models"]),
        ("device=gpu", ["device", "'gpu'", "cuda:N"]),
        ("optim.weight_decy=1e-4", ["unknown key 'optim.weight_decy'", "Did you mean 'optim.weight_decay'"]),
        ("epoch=3", ["unknown key 'epoch'", "'epochs'"]),
    ],
)
def test_bad_value_names_key_received_and_allowed(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    for part in expected:
        assert part in msg, f"{part!r} missing from: {msg}"


def test_cross_key_checks_explain_themselves():
    with pytest.raises(ConfigError, match="onecycle has its own warmup.*schedule.warmup_epochs=0"):
        load_config(None, ["schedule.name=onecycle", "schedule.warmup_epochs=1"])
    with pytest.raises(ConfigError, match="batch_size=100 must be divisible by accum_steps=3"):
        load_config(None, ["data.batch_size=100", "accum_steps=3"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/recipe.yaml")
    with pytest.raises(ConfigError, match="end_epoch=10 leaves no epoch at full size.*use at most 9"):
        load_config(None, ["epochs=10", "data.progressive_resize.end_epoch=10"])
    with pytest.raises(ConfigError, match="end_epoch=2 must come after start_epoch=3"):
        load_config(None, ["data.progressive_resize.start_epoch=3", "data.progressive_resize.end_epoch=2"])
    with pytest.raises(ConfigError, match="data.progressive_resize.end_epoch"):
        load_config(None, ["data.progressive_resize.min_size=12"])  # no default for the ramp's end
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=x,y"]) == {"a.b": 1, "c": [1, 2], "d": "x,y"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_recipes_validate(path):
    cfg = load_config(path).to_dict()

    def leaves(d, prefix=""):
        for k, v in d.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    # every value written in the recipe arrives unchanged in the typed config
    for key, value in leaves(yaml.safe_load(path.read_text())):
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == (list(value) if isinstance(value, tuple) else value), key


def test_cli_bad_value_fails_before_work_without_traceback(capsys, tmp_path):
    code = main(["train", "--data", "digits", "--out", str(tmp_path / "r"), "optim.name=sgdd"])
    err = capsys.readouterr().err
    assert code == 2
    assert "optim.name: received 'sgdd'; expected one of 'sgd' or 'adamw'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing was created
