"""One ``ResNet`` class for every variant: ImageNet (torchvision names), ResNet-D, ResNeXt,
Wide ResNet, the CIFAR family of He et al. 2015 section 4.2, pre-activation nets and
their "plain" twins. Each registered model is one row of data in ``registry.py``.

Shapes for resnet50 at 224 px: stem (B, 64, 56, 56) -> layer1 (B, 256, 56, 56)
-> layer2 (B, 512, 28, 28) -> layer3 (B, 1024, 14, 14) -> layer4 (B, 2048, 7, 7)
-> pool (B, 2048) -> fc (B, num_classes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BLOCKS
from .fused import bn_act
from .layers import FrozenBatchNorm2d, GlobalAvgPool, make_norm, make_shortcut

STEMS = ("imagenet", "deep", "cifar")


class ResNet(nn.Module):
    """A residual network built from a table of choices.

    Args:
        block: ``basic``, ``bottleneck``, ``preact_basic`` or ``preact_bottleneck``.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for resnet50, ``(3, 3, 3)`` for resnet20.
        widths: ``planes`` per stage (the block's output is ``planes * expansion``).
        num_classes: size of the classifier; 0 gives a backbone with ``fc = Identity``.
        in_chans: input channels (1 for grayscale).
        stem: ``imagenet`` (7x7 s2 + maxpool), ``deep`` (three 3x3, ResNet-C/D) or
            ``cifar`` (one 3x3, no pooling, for 28-32 px inputs).
        stem_width: channels of the deep stem's first two convs (the stem outputs ``widths[0]``
            for the cifar stem and 64 otherwise, or ``stem_out``).
        shortcut: ``A`` zero-pad, ``B`` projection, ``D`` avg-pool projection.
        residual: ``False`` removes every shortcut (the paper's "plain" network).
        groups, width_per_group: ResNeXt cardinality and width (Wide ResNet: 128).
        zero_init_residual: zero the last norm of each branch so every block starts as the
            identity (Goyal et al. 2017: +0.2-0.3% top-1).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, increasing linearly to this value in the last block.
        block_drop_rate: dropout inside pre-activation basic blocks (Wide ResNet).
        norm_layer: ``batchnorm``, ``groupnorm`` or ``frozen_batchnorm``.
        grad_checkpointing: recompute block activations in backward to save memory.
    """

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        stem_width: int = 32,
        stem_out: int | None = None,
        shortcut: str = "B",
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        block_drop_rate: float = 0.0,
        norm_layer: str = "batchnorm",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        _check_args(block, stem, layers, widths, in_chans, num_classes)
        block_cls = BLOCKS[block]
        norm = make_norm(norm_layer)
        self.preact = block.startswith("preact")
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = grad_checkpointing

        # ---- stem: (B, in_chans, H, W) -> (B, C, H/4, W/4), or H/1 for the cifar stem
        stem_channels = self._build_stem(stem, in_chans, stem_width, stem_out or
                                         (widths[0] if stem == "cifar" else 64), norm)
        # ---- stages: stage i > 0 halves H and W
        self.stage_names: list[str] = []
        total_blocks = sum(layers)
        inplanes, first_idx = stem_channels, 0
        for i, (n, planes) in enumerate(zip(layers, widths)):
            # Stochastic depth grows linearly with the block's index over the whole net.
            rates = [drop_path_rate * (first_idx + j) / max(total_blocks - 1, 1) for j in range(n)]
            stage, inplanes = _build_stage(
                block_cls, inplanes, planes, n, 1 if i == 0 else 2, rates,
                shortcut=shortcut if residual else None, norm=norm, preact=self.preact,
                groups=groups, width_per_group=width_per_group, block_drop_rate=block_drop_rate,
            )  # fmt: skip
            first_idx += n
            self.add_module(f"layer{i + 1}", stage)
            self.stage_names.append(f"layer{i + 1}")

        # ---- head: (B, num_features, h, w) -> (B, num_classes)
        self.num_features = inplanes
        # Pre-activation nets end with BN + ReLU before pooling (He et al. 2016).
        self.final_norm = (
            nn.Sequential(norm(inplanes), nn.ReLU(inplace=True)) if self.preact else nn.Identity()
        )
        self.avgpool = GlobalAvgPool()  # AdaptiveAvgPool2d(1), layout-keeping gradient
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes
        self._init_weights(zero_init_residual)

    def _build_stem(self, stem: str, in_chans: int, stem_width: int, channels: int, norm) -> int:
        """Sets ``conv1``, ``maxpool``, ``bn1`` and ``relu``; returns the stem's output channels."""
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_chans, channels, 3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            if stem == "imagenet":
                self.conv1 = nn.Conv2d(in_chans, channels, 7, 2, 3, bias=False)
            else:  # deep stem, keys conv1.0/.1/.3/.4/.6 as timm's resnet*d
                self.conv1 = nn.Sequential(
                    nn.Conv2d(in_chans, stem_width, 3, 2, 1, bias=False),
                    norm(stem_width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False),
                    norm(stem_width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(stem_width, channels, 3, 1, 1, bias=False),
                )
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        # A pre-activation net normalises inside each block; its stem is conv only.
        self.bn1 = nn.Identity() if self.preact else norm(channels)
        self.relu = nn.Identity() if self.preact else nn.ReLU(inplace=True)
        return channels

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 ("Delving Deep into Rectifiers"): keeps activation variance
                # constant through ReLU layers.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                # Only a block with a shortcut becomes the identity; zeroing a plain block
                # would make it output zeros and leave the network without any signal.
                if hasattr(m, "zero_init_last") and getattr(m, "residual", True):
                    m.zero_init_last()

    # ------------------------------------------------------------------ interface
    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, n) for n in self.stage_names]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(bn_act(self.bn1, self.relu, self.conv1(x)))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns the output of every stage (C2..C5 for the ImageNet family)."""
        x = self.forward_stem(x)
        outs = []
        for stage in self.stages:
            x = self._run_stage(stage, x)
            outs.append(x)
        return outs

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for blk in stage:
                x = checkpoint(blk, x, use_reentrant=False)
            return x
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> unpooled features (B, num_features, h, w)."""
        x = self.forward_stem(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return self.final_norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pools features, applies dropout and the classifier; ``pre_logits`` stops before fc."""
        x = torch.flatten(self.avgpool(x), 1)  # (B, num_features)
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the head with a freshly initialised one for ``num_classes`` (0: no head)."""
        self.num_classes = num_classes
        # The new head lives where the model does (a model already moved to GPU or bf16).
        ref = next(self.parameters(), None)
        factory = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        self.fc = nn.Identity()
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes, **factory)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def module_groups(self) -> "OrderedDict[str, list[nn.Module]]":
        """Modules grouped from input to output: ``stem``, ``layer1``.., ``head``.

        The single source of truth for freezing, layer-wise learning rates and BN policy.
        """
        groups: OrderedDict[str, list[nn.Module]] = OrderedDict()
        groups["stem"] = [self.conv1, self.bn1]
        for name in self.stage_names:
            groups[name] = [getattr(self, name)]
        groups[self.stage_names[-1]].append(self.final_norm)
        groups["head"] = [self.fc]
        return groups

    def param_groups(self) -> "OrderedDict[str, list[nn.Parameter]]":
        """Parameters grouped like ``module_groups`` (stem first, head last)."""
        return OrderedDict(
            (name, [p for m in mods for p in m.parameters()])
            for name, mods in self.module_groups().items()
        )

    def param_group_of(self) -> dict[str, str]:
        """Maps every parameter name to its group name."""
        ids = {id(p): g for g, ps in self.param_groups().items() for p in ps}
        return {n: ids[id(p)] for n, p in self.named_parameters()}


def _check_args(block, stem, layers, widths, in_chans, num_classes) -> None:
    """Refuses a table row ``ResNet`` cannot build, naming the value received."""
    if block not in BLOCKS:
        raise ValueError(f"block={block!r} is not one of {sorted(BLOCKS)}.")
    if stem not in STEMS:
        raise ValueError(f"stem={stem!r} is not one of {STEMS}.")
    if len(layers) != len(widths):
        raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} differ in length.")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, received {in_chans}.")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, received {num_classes}.")


def _build_stage(block_cls, inplanes: int, planes: int, n: int, stride: int,
                 drop_path_rates: Sequence[float], *, shortcut: str | None, norm, preact: bool,
                 groups: int, width_per_group: int, block_drop_rate: float,
                 ) -> tuple[nn.Sequential, int]:
    """``n`` blocks, the first with ``stride`` (and a shortcut projection where the shape
    changes); ``shortcut=None`` builds the "plain" net. Returns ``(stage, output channels)``."""
    blocks = []
    for j in range(n):
        s = stride if j == 0 else 1
        out = planes * block_cls.expansion
        downsample = (
            make_shortcut(shortcut, inplanes, out, s, norm, preact=preact)
            if shortcut is not None
            else None
        )
        blocks.append(
            block_cls(
                inplanes,
                planes,
                s,
                downsample,
                groups=groups,
                base_width=width_per_group,
                norm=norm,
                drop_path=drop_path_rates[j],
                residual=shortcut is not None,
                drop_rate=block_drop_rate,
            )
        )
        inplanes = out
    return nn.Sequential(*blocks), inplanes


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Returns ``module`` with every BatchNorm2d replaced by an equivalent FrozenBatchNorm2d."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats and module.running_mean is not None:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
