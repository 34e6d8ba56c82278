"""The fine-tuning plan: strategy, BatchNorm policy, learning rate and batch size chosen from
the data, as a value (``plan_finetune``), and the resolved config rebuilt with validation."""

import pytest
import torch

from reslab.config import load_config
from reslab.errors import ConfigError
from reslab.finetune.plan import (
    BASE_LR,
    REFERENCE_BATCH,
    DataFacts,
    WeightsFacts,
    choose_batch_size,
    choose_plan,
    images_per_class,
    plan_finetune,
    resolved_config,
)


def _labels(per_class, classes=10):
    return torch.arange(classes).repeat_interleave(per_class)


@pytest.mark.parametrize(
    "per_class, strategy, bn",
    [(3, "gradual", "frozen"), (9, "gradual", "frozen"), (10, "gradual", "frozen"),
     (99, "gradual", "frozen"), (100, "full", "train"), (600, "full", "train")],
)
def test_tiers_by_images_per_class(per_class, strategy, bn):
    plan = choose_plan(_labels(per_class), 10, batch_size=32)
    assert (plan.strategy, plan.bn) == (strategy, bn)
    assert plan.images_per_class == per_class
    assert plan.lr == pytest.approx(BASE_LR["sgd"][strategy] * 32 / REFERENCE_BATCH)
    assert len(plan.reasons) == 3 and str(per_class) in plan.reasons[0]


def test_fewer_images_give_smaller_steps_through_the_batch():
    few = choose_plan(_labels(5), 10, batch_size=8)
    some = choose_plan(_labels(50), 10, batch_size=64)
    assert few.lr < some.lr


def test_small_batch_fixes_bn_even_with_many_images():
    plan = choose_plan(_labels(200), 10, batch_size=8)
    assert plan.strategy == "full" and plan.bn == "eval" and "batch size 8" in plan.reasons[1]


def test_median_is_robust_to_one_huge_class():
    labels = torch.cat([_labels(20), torch.zeros(5000, dtype=torch.long)])
    assert images_per_class(labels, 10) == 20


def test_user_choices_are_kept_and_said_so():
    plan = choose_plan(_labels(5), 10, strategy="full", bn="train", lr=0.3)
    assert (plan.strategy, plan.bn, plan.lr) == ("full", "train", 0.3)
    assert all("your choice" in r for r in plan.reasons)
    adam = choose_plan(_labels(500), 10, optimizer="adamw", batch_size=256)
    assert adam.lr == BASE_LR["adamw"]["full"]  # AdamW's rate does not scale with the batch
    with pytest.raises(ConfigError, match="strategy='best'"):
        choose_plan(_labels(5), 10, strategy="best")
    with pytest.raises(ConfigError, match="bn='off'"):
        choose_plan(_labels(5), 10, bn="off")


def test_batch_size_follows_the_data_unless_given():
    cfg = load_config(None, overrides=["data.source=x"])
    assert choose_batch_size(cfg, 50) == (8, choose_batch_size(cfg, 50)[1])  # 50 // 4 = 12 -> 8
    assert choose_batch_size(cfg, 100)[0] == 16
    assert choose_batch_size(cfg, 100_000) == (128, None)
    given = load_config(None, overrides=["data.source=x", "data.batch_size=32"])
    assert choose_batch_size(given, 50) == (32, None)


def test_finetune_config_validation():
    with pytest.raises(ConfigError, match="lr_decay=0.5 does nothing with strategy=full"):
        load_config(None, overrides=["finetune.strategy=full", "finetune.lr_decay=0.5"])
    with pytest.raises(ConfigError, match="unfreeze_every"):
        load_config(None, overrides=["finetune.unfreeze_every=0"])
    with pytest.raises(ConfigError, match="cache_features"):
        load_config(None, overrides=["finetune.cache_features=sometimes"])
    cfg = load_config(None, overrides=["finetune.pretrained=reslab:resnet20_fashion_mnist"])
    assert cfg.finetune.strategy == "auto" and cfg.finetune.lr_decay is None


def _cfg(*overrides):
    return load_config(None, overrides=["data.source=x", "finetune.pretrained=reslab:resnet20_fashion_mnist",
                                        *overrides])


def test_plan_is_a_pure_value_of_the_facts():
    facts = DataFacts(_labels(5), 10, in_chans=1, n_train=50)
    weights = WeightsFacts("reslab:resnet20_fashion_mnist", in_chans=1)
    plan = plan_finetune(_cfg(), facts, weights, on_cpu=True)
    assert plan == plan_finetune(_cfg(), facts, weights, on_cpu=True)  # same facts, same plan
    assert (plan.strategy, plan.bn, plan.batch_size, plan.step_clip) == ("gradual", "frozen", 8, 0.0025)
    assert plan.lr == pytest.approx(0.02 * 8 / 64) and not plan.cache_features
    assert [r.split("=")[0] for r in plan.reasons] == ["strategy", "bn", "lr", "batch_size", "step_clip"]
    linear = plan_finetune(_cfg("finetune.strategy=linear"), facts, weights, on_cpu=True)
    assert linear.cache_features and linear.step_clip == 0.0 and linear.lr_decay == 1.0
    assert not plan_finetune(_cfg("finetune.strategy=linear"), facts, weights, on_cpu=False).cache_features


def test_resolved_config_is_validated_not_copied():
    # The plan chooses batch 8; with accum_steps=3 the config's own rule (the batch splits
    # into equal micro-batches) must refuse it: model_copy skipped that check.
    cfg = _cfg("accum_steps=3", "data.batch_size=9")
    plan = plan_finetune(cfg, DataFacts(_labels(5), 10, 1, 50), WeightsFacts("w", 1), on_cpu=True)
    run_cfg = resolved_config(cfg, plan, arch="resnet20", image_size=28, out="runs/x")
    assert (run_cfg.data.batch_size, run_cfg.finetune.strategy, run_cfg.optim.lr) == (9, "gradual", plan.lr)
    plan.batch_size = 8
    with pytest.raises(ConfigError, match="batch_size=8 must be divisible by accum_steps=3"):
        resolved_config(cfg, plan, arch="resnet20", image_size=28, out="runs/x")
    with pytest.raises(ConfigError, match="model.name"):
        resolved_config(cfg, plan, arch="resnet2O", image_size=28, out="runs/x")


def test_grey_weights_on_colour_images_name_data_in_chans():
    facts = DataFacts(_labels(5), 10, in_chans=3, n_train=50)
    grey = WeightsFacts("reslab:resnet20_fashion_mnist", in_chans=1)
    with pytest.raises(ConfigError, match=r"take 1-channel \(grey\) images.*data.in_chans=1"):
        plan_finetune(_cfg(), facts, grey, on_cpu=True)
    # the reverse works (the first conv is summed over colours) and the plan says how to keep colour
    colour = WeightsFacts("torchvision:resnet18.IMAGENET1K_V1", in_chans=3)
    plan = plan_finetune(_cfg(), DataFacts(_labels(5), 10, in_chans=1, n_train=50), colour, on_cpu=True)
    assert any("data.in_chans=3" in r for r in plan.reasons)
    assert WeightsFacts.from_info("w", {"preprocess": {"input_size": [1, 28, 28]}}).in_chans == 1
    assert WeightsFacts.from_info("w", {}).in_chans is None
