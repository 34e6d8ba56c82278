"""The cached linear head trains through the engine's step: the optimizer and schedule of
the run's config (Nesterov, no decay on the bias), checked against torch.optim by hand."""

import copy
import math

import pytest
import torch
from torch import nn

from reslab.config import load_config
from reslab.engine.schedule import LRFactor
from reslab.engine.step import batch_generator
from reslab.finetune.features import FeatureBatches, train_head


def _features(n=40, dim=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(n // classes + 1)[:n]
    feats = torch.randn(n, dim, generator=g) + labels[:, None].float()  # (N, F), separable-ish
    return feats, labels


def _oracle(head, cfg, feats, labels, *, nesterov, bias_decay):
    """SGD on the head written out with torch.optim and the config's numbers."""
    o = cfg.optim
    opt = torch.optim.SGD([{"params": [head.weight], "weight_decay": o.weight_decay},
                           {"params": [head.bias], "weight_decay": o.weight_decay if bias_decay else 0.0}],
                          lr=o.lr, momentum=o.momentum, nesterov=nesterov)
    per_epoch = math.ceil(len(labels) / cfg.data.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRFactor(cfg.schedule, cfg.epochs * per_epoch, per_epoch))
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(labels), generator=batch_generator(cfg.seed, epoch, 0))
        for i in range(0, len(labels), cfg.data.batch_size):
            idx = order[i : i + cfg.data.batch_size]
            loss = nn.functional.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head


def test_head_follows_the_configs_optimizer():
    cfg = load_config(None, overrides=["epochs=3", "data.batch_size=8", "optim.lr=0.5", "optim.weight_decay=0.05"])
    assert cfg.optim.nesterov and not cfg.optim.decay_norm_bias  # what config.yaml says
    feats, labels = _features()
    torch.manual_seed(0)
    head = nn.Linear(16, 3)
    start = copy.deepcopy(head)
    history = train_head(cfg, head, (feats, labels), (feats, labels))
    want = _oracle(copy.deepcopy(start), cfg, feats, labels, nesterov=True, bias_decay=False)
    old = _oracle(copy.deepcopy(start), cfg, feats, labels, nesterov=False, bias_decay=True)
    torch.testing.assert_close(head.weight, want.weight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head.bias, want.bias, atol=1e-5, rtol=1e-5)
    assert (head.weight - old.weight).abs().max() > 1e-3  # the old loop's head is measurably different
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[-1]["step"] == 15
    assert history[-1]["lr"] == pytest.approx(0.0) and history[-1]["val_acc"] is not None


def test_feature_batches_cover_every_row_once_per_epoch():
    feats, labels = _features(n=21)
    batches = FeatureBatches(feats, labels, 4, shuffle=True, seed=1)
    orders = []
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        ys = torch.cat([y for _, y in batches])
        assert len(batches) == 6 and sorted(ys.tolist()) == sorted(labels.tolist())
        orders.append(torch.cat([x[:, 0] for x, _ in batches]))
    assert not torch.equal(orders[0], orders[1])  # a fresh order each epoch
    batches.set_epoch(0)
    assert torch.equal(torch.cat([x[:, 0] for x, _ in batches]), orders[0])  # and the same on a rerun
