"""Batches for training and evaluation: ``make_loader`` picks the fast path for a split.

* In memory (``split.images`` is a uint8 tensor): each batch is gathered, augmented and
  normalised as a few whole-batch tensor ops (``batch_ops``), on the target device. No
  worker processes; on 2 CPU cores this delivers Fashion-MNIST far faster than a ResNet
  consumes it.
* Streaming (``split.paths``): persistent DataLoader workers decode files (libjpeg-turbo or
  Pillow draft mode, see ``images.load_image_tensor``) and apply per-image v2 transforms;
  the uint8 batch crosses to the device (pinned on CUDA) and is normalised there.

Both yield ``(x float32 (B, C, H, W) normalised, y int64 (B,))`` and draw every random
number from generators seeded by (seed, epoch, batch index), so ``iter_from(k)`` resumes an
epoch exactly at batch k, whatever the number of workers.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, DataError
from . import batch_ops
from .bundle import Split
from .gpu_decode import DeviceDecoder, EncodedBatchDataset, choose_decode
from .images import load_image_tensor, skip_reason
from .sampling import derive_seed, epoch_indices, generator
from .transforms import (
    AugmentSpec,
    eval_tensor_transform,
    policy_transform,
    resolve_augment,
    to_channels,
    train_transform,
)  # fmt: skip


def _resolve_device(device: Any) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from ..device import resolve_device

    return resolve_device(str(device))


class _Loader:
    """What both loaders share: epoch bookkeeping, batch arithmetic, resume."""

    kind = "base"

    def __init__(self, split: Split, batch_size: int, train: bool, preprocess: dict, spec: AugmentSpec,
                 seed: int, device: torch.device, drop_last: bool | None, sampler: str,
                 rank: int, world_size: int, random_erasing: float,
                 sizes: list[int] | None = None, log: Callable[[str], Any] | None = None):  # fmt: skip
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
        if len(split) == 0:
            raise DataError(f"split {split.name!r} has no images; nothing to load.")
        if not 0.0 <= random_erasing <= 1.0:
            raise ConfigError(f"random_erasing={random_erasing!r} is a probability in [0, 1].")
        if sampler not in ("random", "balanced"):
            raise ConfigError(f"sampler={sampler!r}: use 'random' or 'balanced' (class-balanced draws).")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} must be in [0, world_size={world_size}).")
        self.split, self.batch_size, self.train = split, int(batch_size), bool(train)
        self.preprocess, self.spec, self.seed = preprocess, spec, int(seed)
        self.device, self.rank, self.world_size = device, int(rank), int(world_size)
        self.sampler = sampler if train else "sequential"
        self.random_erasing = float(random_erasing) if train else 0.0
        self.sizes = list(sizes) if train and sizes else None
        self.mean, self.std = list(preprocess["mean"]), list(preprocess["std"])
        self.in_chans = int(preprocess["input_size"][0])
        self.epoch = 0
        self.log = log or logging.getLogger("reslab.data").warning
        per_rank = -(-len(split) // self.world_size)
        if drop_last is None:
            drop_last = self.train and per_rank > self.batch_size
        self.drop_last = bool(drop_last)
        self.samples_per_rank = per_rank
        # Augmentation draws: one stream per rank under DDP, so the i-th images of two
        # ranks don't share crops and flips; a single process keeps the plain seed.
        self.aug_seed = self.seed if self.world_size == 1 else derive_seed(self.seed, 104729, self.rank)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = self.samples_per_rank, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """The sample indices this rank visits in ``epoch`` (default: the current one)."""
        return epoch_indices(
            self.split.labels, seed=self.seed, epoch=self.epoch if epoch is None else epoch,
            sampler=self.sampler, rank=self.rank, world_size=self.world_size,
        )  # fmt: skip

    def batch_indices(self, batch: int, order: torch.Tensor | None = None) -> torch.Tensor:
        order = self.indices() if order is None else order
        return order[batch * self.batch_size : (batch + 1) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterates the current epoch starting at batch index ``batch`` (exact resume)."""
        raise NotImplementedError

    def _finish(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """uint8 or 0..255 float batch on the device -> normalised float32 (+ random erasing)."""
        x = batch_ops.normalize(to_channels(x, self.in_chans), self.mean, self.std)
        if self.random_erasing > 0:
            x = batch_ops.random_erasing(x, self.random_erasing, generator(self.aug_seed, epoch, batch, 2))
        if self.sizes is not None and epoch < len(self.sizes):
            x = batch_ops.resize(x, self.sizes[epoch])
        return x

    def close(self) -> None:
        """Releases worker processes (streaming); nothing to do in memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        aug = "eval" if not self.train else f"{self.spec}"
        if self.sizes is not None:
            aug += f", progressive resizing {describe_sizes(self.sizes, self.preprocess['crop'])}"
        return (f"{self.kind} loader: {len(self.split)} {self.split.name} images, batch {self.batch_size}, "
                f"{len(self)} batches/epoch, {aug}")  # fmt: skip


def progressive_sizes(full: int, epochs: int, min_size: int, start_epoch: int, end_epoch: int,
                      step: int = 4) -> list[int]:
    """Training image size of each epoch for progressive resizing: ``min_size`` until
    ``start_epoch``, a linear ramp rounded to multiples of ``step``, ``full`` from
    ``end_epoch`` on (the ramp of FFCV's ImageNet recipes).

    Raises:
        ConfigError: ``min_size`` is not smaller than ``full``, or the epochs are out of order.
    """
    if not 0 < min_size < full:
        hint = f"choose e.g. {full // 2}" if full >= 8 else "these images are too small to shrink; remove it"
        raise ConfigError(
            f"progressive_resize.min_size={min_size} px must be smaller than the training size, "
            f"{full} px (the crop size of this data): {hint}."
        )
    if not 0 <= start_epoch < end_epoch < epochs:
        raise ConfigError(
            f"progressive_resize: expected 0 <= start_epoch ({start_epoch}) < end_epoch "
            f"({end_epoch}) < epochs ({epochs}), so that the last epochs train at full size."
        )
    sizes = []
    for epoch in range(epochs):
        t = min(max((epoch - start_epoch) / (end_epoch - start_epoch), 0.0), 1.0)
        size = math.floor((min_size + t * (full - min_size)) / step + 0.5) * step
        sizes.append(full if epoch >= end_epoch else min(max(size, min_size), full))
    return sizes


def describe_sizes(sizes: list[int], full: int) -> str:
    """``[16, 16, 20, 28]`` -> ``"16 px (epochs 1-2), 20 px (epoch 3), 28 px (epoch 4)"``."""
    runs: list[tuple[int, int, int]] = []  # (size, first epoch, last epoch), 1-based
    for epoch, size in enumerate(sizes, 1):
        if runs and runs[-1][0] == size:
            runs[-1] = (size, runs[-1][1], epoch)
        else:
            runs.append((size, epoch, epoch))
    parts = [f"{s} px (epoch {a})" if a == b else f"{s} px (epochs {a}-{b})" for s, a, b in runs]
    return ", ".join(parts) + ("" if sizes[-1] == full else f", then {full} px")


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resizes a square batch stored at another size (e.g. 28 px Fashion-MNIST for a 224 px
    model) to ``size``; stored tensors already at ``size`` pass through untouched."""
    if x.shape[-2:] == (size, size):
        return x
    return batch_ops.resize(x.float(), size)


class InMemoryLoader(_Loader):
    """Batches from a uint8 tensor, augmented as whole-batch tensor ops (see module docstring)."""

    kind = "in-memory"

    def __init__(self, split: Split, **kw):
        super().__init__(split, **kw)
        self._images = split.images
        self._labels = split.labels
        self._policy = policy_transform(self.spec.policy) if self.train else None

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """Files dropped while the split was decoded (never silently)."""
        return list(self.split.skipped)

    def _to_device(self) -> None:
        # Keep the whole uint8 dataset on the GPU when it is small (one copy, no per-batch
        # host->device traffic); on CPU it already is where the model runs.
        if self.device.type == "cuda" and self._images.device.type != "cuda":
            if self._images.numel() <= 1 << 30:
                self._images = self._images.to(self.device)
                self._labels = self._labels.to(self.device)
            elif not self._images.is_pinned():
                self._images = self._images.pin_memory()

    def make_batch(self, epoch: int, batch: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Builds batch ``batch`` of ``epoch`` from sample indices ``index``."""
        idx = index.to(self._images.device, non_blocking=True)
        x = self._images[idx].to(self.device, non_blocking=True)  # uint8 (B, C, S, S)
        y = self._labels[idx].to(self.device, non_blocking=True)
        crop, resize, spec = self.preprocess["crop"], self.preprocess["resize"], self.spec
        if not self.train:
            return self._finish(batch_ops.center_crop(_fit(x, resize), crop), epoch, batch), y
        gen = generator(self.aug_seed, epoch, batch, 1)
        if spec.crop == "pad":
            x = batch_ops.pad_crop_flip(batch_ops.center_crop(_fit(x, resize), crop), spec.pad, spec.flip, gen)
        elif spec.crop == "rrc":
            # boxes in stored pixels; grid_sample resamples straight to the crop size
            h, w = x.shape[-2:]
            boxes = batch_ops.rrc_boxes(len(x), h, w, spec.scale, spec.ratio, gen)
            mirror = torch.rand(len(x), generator=gen) < 0.5 if spec.flip else None
            x = batch_ops.resized_crop_flip(x.float(), crop, boxes, mirror)  # float 0..255
        else:
            x = batch_ops.center_crop(_fit(x, resize), crop)
            if spec.flip:
                x = batch_ops.random_flip(x, gen)
        if self._policy is not None:
            x = self._apply_policy(x, gen)
        return self._finish(x, epoch, batch), y

    def _apply_policy(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """TrivialAugment / RandAugment per image (they draw one op per call, so a batch
        call would give every image the same op). v2 uses the global RNG, so it runs in a
        forked RNG state seeded from this batch's generator."""
        if x.dtype != torch.uint8:
            x = x.round().clamp(0, 255).to(torch.uint8)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return torch.stack([self._policy(img) for img in x])

    def iter_from(self, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._to_device()
        # the epoch's order crosses to the images' device once, not one blocking copy per batch
        epoch, order = self.epoch, self.indices().to(self._images.device)
        for b in range(int(batch), len(self)):
            yield self.make_batch(epoch, b, self.batch_indices(b, order))


class _KeySampler(Sampler):
    """Yields ``(epoch, batch, indices)`` keys; the dataset loads a whole batch per key."""

    def __init__(self, loader: "StreamingLoader"):
        self.loader = loader
        self.start = 0

    def __iter__(self):
        lo = self.loader
        epoch, order = lo.epoch, lo.indices()
        for b in range(self.start, len(lo)):
            yield epoch, b, lo.batch_indices(b, order).tolist()

    def __len__(self) -> int:
        return len(self.loader) - self.start


class _BatchDataset(Dataset):
    """Decodes and transforms one batch of files in a worker; bad files are returned by name."""

    def __init__(self, paths, labels, transform, decode_chans, target_size, out_size, seed):
        self.paths, self.labels = paths, labels
        self.transform, self.decode_chans = transform, decode_chans
        self.target_size, self.out_size, self.seed = target_size, out_size, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        epoch, batch, index = key
        images, labels, skipped = [], [], []
        # v2 transforms draw from the global RNG: seed it per batch (in a fork, so the
        # caller's RNG is untouched when there are no workers).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, epoch, batch, 3))
            for i in index:
                path = self.paths[i]
                try:
                    img = load_image_tensor(path, self.decode_chans, target_size=self.target_size)
                    images.append(self.transform(img))
                    labels.append(int(self.labels[i]))
                except Exception as e:  # noqa: BLE001 - never crash a run on one bad file
                    skipped.append((path, skip_reason(path, e)))
        if images:
            x = torch.stack(images)  # uint8 (B, C, crop, crop)
        else:
            x = torch.empty((0, self.decode_chans, self.out_size, self.out_size), dtype=torch.uint8)
        return x, torch.tensor(labels, dtype=torch.int64), skipped


def _keep(batch):
    return batch


def worker_count(workers: int | None, log: Callable[[str], Any]) -> int:
    """Decoder processes: default min(4, cores); more than the cores is capped, with a note,
    since extra processes only compete for the same cores (and each holds a copy of the
    decode state)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers is None:
        return min(4, cores)
    if int(workers) < 0:
        raise ConfigError(f"workers={workers!r}: use 0 (decode in this process) or a positive count.")
    if int(workers) > cores:
        log(f"note: workers={workers} is more than the {cores} CPU cores this process may use; "
            f"using {cores} decoder processes.")  # fmt: skip
        return cores
    return int(workers)


class StreamingLoader(_Loader):
    """Batches decoded from files by persistent DataLoader workers (see module docstring)."""

    kind = "streaming"

    def __init__(self, split: Split, workers: int | None = None, decode: str = "auto", **kw):
        super().__init__(split, **kw)
        workers = worker_count(workers, self.log)
        tf = train_transform(self.preprocess, self.spec) if self.train else eval_tensor_transform(self.preprocess)
        self.decode = choose_decode(decode, self.device, split.paths, self.spec)
        self._decoder = None  # decode=device: workers read bytes, the device decodes (gpu_decode)
        if self.decode == "device":
            self._dataset = EncodedBatchDataset(split.paths, split.labels)
            self._decoder = DeviceDecoder(self.preprocess, self.spec, self.train, self.device, self.aug_seed)
        else:
            self._dataset = _BatchDataset(split.paths, split.labels, tf, self.in_chans,
                                          self.preprocess["resize"], self.preprocess["crop"], self.aug_seed)  # fmt: skip
        self._sampler = _KeySampler(self)
        cuda = self.device.type == "cuda"
        self._dl = DataLoader(
            self._dataset, batch_size=None, sampler=self._sampler, num_workers=int(workers),
            collate_fn=_keep, pin_memory=cuda, persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )  # fmt: skip
        self.workers = int(workers)
        self._skipped: dict[str, str] = dict(split.skipped)  # screened out when the data loaded

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """Files left out of this split (at load time, or met unreadable while streaming),
        each once, with the reason."""
        return sorted(self._skipped.items())

    def close(self) -> None:
        """Stops the persistent worker processes now (otherwise when the loader is collected)."""
        it = getattr(self._dl, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._dl._iterator = None

    def iter_from(self, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._sampler.start = int(batch)
        epoch, met = self.epoch, []
        try:
            for b, (x, y, skipped) in enumerate(self._dl, start=int(batch)):
                if self._decoder is not None:  # x: encoded bytes; decoded here, in one batch
                    x, y, skipped = self._decoder(x, y, epoch, b, skipped)
                for path, reason in skipped:
                    if path not in self._skipped:
                        self._skipped[path] = reason
                        met.append((path, reason))
                if len(x) == 0:
                    continue  # every file of this batch was bad: listed below
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                yield self._finish(x, epoch, b), y
        finally:
            self._report(met)

    def _report(self, met: list[tuple[str, str]]) -> None:
        """One log line for files that became unreadable after loading (changed on disk)."""
        if not met:
            return
        self.split.skipped.extend(met)
        eg = "; ".join(f"{p}: {r}" for p, r in met[:3])
        self.log(f"warning: {self.split.name}: skipped {len(met)} unreadable file(s) while streaming "
                 f"(epoch {self.epoch + 1}), so it covered fewer than {len(self.split)} images; e.g. {eg}")  # fmt: skip


def make_loader(
    split: Split,
    *,
    batch_size: int,
    train: bool,
    preprocess: dict,
    augment: Any = "default",
    seed: int = 0,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    decode: str = "auto",
    drop_last: bool | None = None,
    sampler: str = "random",
    rank: int = 0,
    world_size: int = 1,
    random_erasing: float = 0.0,
    sizes: list[int] | None = None,
    log: Callable[[str], Any] | None = None,
) -> InMemoryLoader | StreamingLoader:
    """A loader of normalised batches for ``split``.

    Args:
        split: a ``Split`` (in memory or files).
        batch_size: images per batch (per rank).
        train: augment and shuffle (True) or centre-crop in order (False).
        preprocess: the bundle's (or a checkpoint's) preprocess record.
        augment: see ``transforms.resolve_augment`` (``default``, ``none``, ``trivial``, ...).
        seed: order and augmentation depend only on (seed, epoch, batch index).
        device: where batches are produced (``cpu``, ``cuda``, ``auto``).
        workers: decoder processes for streamed splits (default min(4, CPUs); more than the
            CPU cores are capped to them, with a note in the log); ignored in memory.
        decode: streamed splits: ``workers`` (per image, on CPU), ``device`` (JPEG batches
            on the loader's device, ``gpu_decode``) or ``auto`` (device on CUDA with JPEGs).
        drop_last: drop the last partial batch; default True when training on more than one batch.
        sampler: ``random`` or ``balanced`` (class-balanced draws with replacement).
        rank, world_size: DDP sharding: disjoint slices of one permutation, equal lengths.
        random_erasing: probability of Random Erasing per training image.
        sizes: training image size per epoch (progressive resizing, ``progressive_sizes``);
            later epochs, and evaluation, keep the preprocess crop size.
        log: where a streamed split reports files that became unreadable after loading
            (default: a warning on the ``reslab.data`` logger).
    Returns:
        A loader with ``set_epoch(e)``, ``iter_from(batch)``, ``len()`` and ``skipped``.
    """
    spec = resolve_augment(augment if train else "none", preprocess, hflip=split.hflip)
    common = dict(
        batch_size=batch_size, train=train, preprocess=preprocess, spec=spec, seed=seed,
        device=_resolve_device(device), drop_last=drop_last, sampler=sampler, rank=rank,
        world_size=world_size, random_erasing=random_erasing, sizes=sizes, log=log,
    )  # fmt: skip
    if split.in_memory:
        return InMemoryLoader(split, **common)
    return StreamingLoader(split, workers=workers, decode=decode, **common)
