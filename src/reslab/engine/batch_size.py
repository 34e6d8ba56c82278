"""The one reading of ``data.batch_size``: the global batch (images per optimizer step over
all processes), split into micro-batches per process and accumulation step.

    global batch = processes x accum_steps x micro-batch

Training, evaluation, lr-find and fine-tuning all take their batch sizes from
``batch_sizes``, so a batch size means the same thing everywhere (issue 19).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class BatchSizes:
    """Attributes:
    global_batch: images per optimizer step, over all processes (``data.batch_size``).
    micro: images per forward pass of one process (what BatchNorm normalises over).
    eval: images per evaluation forward pass of one process.
    accum_steps: micro-batches per optimizer step.
    world_size: processes.
    """

    global_batch: int
    micro: int
    eval: int
    accum_steps: int
    world_size: int

    def steps_per_epoch(self, batches: int) -> int:
        """Optimizer steps in an epoch of ``batches`` micro-batches (a last partial
        accumulation window still steps)."""
        return -(-batches // self.accum_steps)


def batch_sizes(cfg, world_size: int = 1) -> BatchSizes:
    """Splits ``cfg.data.batch_size`` over processes and accumulation steps.

    Args:
        cfg: a ``TrainConfig`` (``data.batch_size``, ``data.eval_batch_size``, ``accum_steps``).
        world_size: processes of a DDP run.
    Returns:
        The ``BatchSizes``.
    Raises:
        ConfigError when the global batch does not split evenly, with the nearest that does.
    """
    bs, accum = cfg.data.batch_size, cfg.accum_steps
    per_step = world_size * accum
    if bs % per_step:
        raise ConfigError(
            f"data.batch_size={bs} is the global batch and must be divisible by "
            f"processes x accum_steps = {world_size} x {accum}; e.g. use "
            f"data.batch_size={max(per_step, bs // per_step * per_step)}."
        )
    eval_bs = max(1, (cfg.data.eval_batch_size or 2 * bs) // world_size)
    return BatchSizes(bs, bs // per_step, eval_bs, accum, world_size)


def smallest_batch(loader) -> int:
    """The smallest training micro-batch ``loader`` yields (its last one, unless dropped)."""
    n, b = loader.samples_per_rank, loader.batch_size
    if n <= b:
        return n
    return b if loader.drop_last or n % b == 0 else n % b


def batch_norm_layers(model: nn.Module) -> int:
    """How many BatchNorm layers normalise with the statistics of the batch in training
    (layers kept on their running statistics, as fine-tuning's, are not counted)."""
    was = model.training
    model.train()  # a layer that stays in eval mode after train() keeps its statistics
    n = sum(1 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training)
    model.train(was)
    return n


def check_batch_norm_batch(model: nn.Module, batch: int, sync_bn: bool, world_size: int, log) -> None:
    """Refuses a BatchNorm model trained on batches of one image, warns for two or three.

    BatchNorm normalises each channel over the batch: over one image it has nothing to
    normalise a 1x1 feature map with (PyTorch raises mid-training), and over two or three
    the statistics are noise that often ends in NaN.

    Args:
        model: the model about to train.
        batch: the smallest micro-batch of one process (``smallest_batch``).
        sync_bn: BatchNorm statistics are taken over all ``world_size`` processes.
        log: where the warning goes.
    Raises:
        ConfigError for a batch of one image with BatchNorm.
    """
    if not batch_norm_layers(model):
        return
    seen = batch * (world_size if sync_bn else 1)
    fixes = ("use data.batch_size of 16 or more (with accum_steps, the micro-batch "
             "data.batch_size / accum_steps is what BatchNorm sees), or model.norm_layer=groupnorm, "
             "which does not depend on the batch")  # fmt: skip
    if seen <= 1:
        raise ConfigError(
            f"training would run BatchNorm on batches of {seen} image: it normalises each channel "
            f"over the batch, and one image has no batch statistics; {fixes}."
        )
    if seen <= 3:
        log(f"warning: BatchNorm will normalise over batches of {seen} images; such batch "
            f"statistics are mostly noise and training often diverges (NaN). Rather {fixes}.")  # fmt: skip
