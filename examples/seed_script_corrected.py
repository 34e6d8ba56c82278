"""The seed tutorial's section 5.2.1 "whole project" script, corrected, in plain PyTorch.

The seed's script does not run: ``BasicBlock`` is an ``nn.Sequential`` built from undefined
names (``in_channels``, ``stride``...), it has no shortcut (so it is not a residual block),
``block(64, layers[0])`` is not how a stage is built, the classifier is fixed at 1000
classes whatever the folder holds, the validation images go through the same transform as
training, and nothing is ever saved. This file keeps the seed's structure (transforms ->
ImageFolder -> DataLoader -> model -> train loop -> evaluate loop) and fixes each of those.
docs/seed_script.md shows it side by side with the reslab commands that replace it.

    python examples/seed_script_corrected.py --data path/to/images   # train/ and val/ inside
    python examples/seed_script_corrected.py --demo                  # writes a digits folder first

Only torch, torchvision and Pillow are used (scikit-learn for ``--demo``); reslab is not needed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ----------------------------------------------------------------------------- data
def make_transforms(image_size: int) -> tuple[transforms.Compose, transforms.Compose]:
    """Training and evaluation transforms.

    Fix: the seed used one transform for both. Random augmentation belongs to training only;
    evaluation must be deterministic or the validation accuracy changes from run to run.

    Args:
        image_size: side of the square the network sees (224 for ImageNet-sized photos).
    Returns:
        (train_transform, eval_transform).
    """
    normalize = transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    train = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        normalize,
    ])
    # Resize the short side to size/0.875 and centre-crop: the standard ImageNet evaluation.
    evaluate = transforms.Compose([
        transforms.Resize(int(round(image_size / 0.875))),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        normalize,
    ])
    return train, evaluate


def make_loaders(root: Path, image_size: int, batch_size: int, workers: int):
    """ImageFolder datasets and DataLoaders for ``root/train`` and ``root/val``.

    Returns:
        (train_loader, val_loader, class_names).
    """
    train_tf, eval_tf = make_transforms(image_size)
    train_set = datasets.ImageFolder(root / "train", transform=train_tf)
    val_set = datasets.ImageFolder(root / "val", transform=eval_tf)
    # Fix: ImageFolder numbers classes by the sorted sub-folder names of *each* split; a
    # class missing from val would silently shift every label after it.
    if train_set.classes != val_set.classes:
        raise SystemExit(
            f"train/ has classes {train_set.classes} but val/ has {val_set.classes}; "
            "give both splits the same class sub-folders"
        )
    pin = torch.cuda.is_available()
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                              num_workers=workers, pin_memory=pin,
                              drop_last=len(train_set) > batch_size)
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False,
                            num_workers=workers, pin_memory=pin)
    return train_loader, val_loader, train_set.classes


# ----------------------------------------------------------------------------- model
class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU (He et al. 2015).

    Fix: the seed's block was an ``nn.Sequential`` with no shortcut: no ``+ x``, so not a
    residual block at all, and it referred to names that were never defined.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            # Projection shortcut (option B): match the branch's shape when it changes.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # the residual connection the seed left out


class ResNet(nn.Module):
    """ResNet-18/34 layout with torchvision's parameter names (conv1, bn1, layer1..4, fc)."""

    def __init__(self, block: type[BasicBlock], layers: list[int], num_classes: int):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # Fix: a stage is a run of blocks; the first one may halve the resolution.
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        # Fix: as many outputs as the folder has classes, not a fixed 1000.
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [block(self.in_planes, planes, stride)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes, 1) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512)
        return self.fc(x)


# ----------------------------------------------------------------------------- loops
def train_one_epoch(model, loader, criterion, optimizer, device) -> float:
    """One pass over ``loader``; returns the mean loss per *image*."""
    model.train()
    total_loss, seen = 0.0, 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        # Fix: weight by batch size; dividing a sum of batch means by len(loader) is wrong
        # when the last batch is smaller.
        total_loss += loss.item() * labels.size(0)
        seen += labels.size(0)
    return total_loss / max(seen, 1)


@torch.no_grad()
def evaluate(model, loader, criterion, device) -> tuple[float, float]:
    """Returns (mean loss, accuracy in %) on ``loader`` with BN in inference mode."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        outputs = model(inputs)
        total_loss += criterion(outputs, labels).item() * labels.size(0)
        correct += (outputs.argmax(dim=1) == labels).sum().item()
        seen += labels.size(0)
    return total_loss / max(seen, 1), 100.0 * correct / max(seen, 1)


# ----------------------------------------------------------------------------- main
def write_demo_folder(root: Path, size: int = 32) -> Path:
    """scikit-learn's 8x8 digits as PNGs in ``root/{train,val}/<digit>/`` (about a second)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(digits.target)):
        split = "val" if i % 5 == 0 else "train"
        folder = root / split / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")
    return root


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="folder with train/<class>/ and val/<class>/")
    p.add_argument("--demo", action="store_true",
                   help="write scikit-learn digits and train on them")
    p.add_argument("--image-size", type=int, default=224, help="pixels (use 32-64 for a CPU try)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--out", type=Path, default=Path("seed_model.pt"), help="best weights go here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.data is None and not args.demo:
        p.error("give --data FOLDER (with train/ and val/ inside) or --demo")
    return args


def main(argv=None) -> float:
    """Trains and evaluates; returns the best validation accuracy in %."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # Fix: the seed's runs were not reproducible
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = args.data or write_demo_folder(Path(tempfile.mkdtemp(prefix="seed_demo_")))
    train_loader, val_loader, classes = make_loaders(root, args.image_size, args.batch_size,
                                                     args.workers)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=len(classes)).to(device)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    # Fix: decay the learning rate; a constant Adam rate stalls well above the best loss.
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    criterion = nn.CrossEntropyLoss()
    best = -1.0
    for epoch in range(args.epochs):
        train_loss = train_one_epoch(model, train_loader, criterion, optimizer, device)
        scheduler.step()
        val_loss, val_acc = evaluate(model, val_loader, criterion, device)
        print(f"epoch {epoch + 1}/{args.epochs}  train loss {train_loss:.4f}  "
              f"val loss {val_loss:.4f}  val acc {val_acc:.2f}%")
        if val_acc > best:  # Fix: keep the best weights, with the class names they predict
            best = val_acc
            torch.save({"model": model.state_dict(), "classes": classes}, args.out)
    print(f"best validation accuracy {best:.2f}%  (weights: {args.out})")
    return best


if __name__ == "__main__":
    main()
