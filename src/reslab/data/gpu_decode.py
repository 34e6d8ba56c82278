"""JPEG batches decoded, resized and augmented on the loader's device (the streaming
loader's ``decode="device"`` mode).

A CPU core decodes about 400 full-size JPEGs/s, so 16 cores cannot feed resnet50 training
on one H200 (~4,600 images/s, issue 21). Here the DataLoader workers only read the files'
bytes; the main process hands each batch of encoded bytes to ``torchvision.io.decode_jpeg``
in ONE call (nvJPEG's batched decoder on CUDA, libjpeg-turbo on CPU, where the same code
runs and is tested), then crops, resizes and flips every image on that device.

Files the batched decoder refuses (corrupt, CMYK, a PNG named .jpg) are retried one by one
through ``images.load_image_tensor`` (Pillow); those that still fail are returned by name
with the reason, like the worker-decoding path does, so a run never stops on one bad file.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import ConfigError
from . import batch_ops
from .images import load_image_tensor, skip_reason
from .sampling import derive_seed, generator
from .transforms import AugmentSpec

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
DECODE_MODES = ("auto", "workers", "device")


def all_jpeg(paths: Sequence[str]) -> bool:
    """True when every file name ends in a JPEG suffix (contents are checked on decode)."""
    return len(paths) > 0 and all(str(p).lower().endswith(JPEG_SUFFIXES) for p in paths)


def choose_decode(decode: str, device: torch.device, paths: Sequence[str], spec: AugmentSpec) -> str:
    """Where a streamed split is decoded: ``"workers"`` (per image, on CPU worker
    processes) or ``"device"`` (batched, on the loader's device).

    Args:
        decode: ``auto`` (the device when it is a GPU, the files are all JPEG and the
            augmentation has no per-image policy), ``workers`` or ``device``.
        device: the loader's device.
        paths: the split's files.
        spec: the training augmentation (TrivialAugment/RandAugment run only in workers).
    Returns:
        ``"workers"`` or ``"device"``.
    Raises:
        ConfigError: an unknown mode, or ``device`` asked for where it cannot run.
    """
    if decode not in DECODE_MODES:
        raise ConfigError(f"decode={decode!r}: use one of {DECODE_MODES}.")
    if decode == "auto":
        fits = device.type == "cuda" and all_jpeg(paths) and spec.policy is None
        return "device" if fits else "workers"
    if decode == "device":
        other = next((p for p in paths if not str(p).lower().endswith(JPEG_SUFFIXES)), None)
        if other is not None:
            raise ConfigError(f"decode=device reads JPEG files only; received {other!r}. "
                              "Use decode=workers (or auto) for folders with other formats.")  # fmt: skip
        if spec.policy is not None:
            raise ConfigError(f"decode=device does not run the per-image policy {spec.policy!r}; "
                              "use decode=workers, or augment=default.")  # fmt: skip
    return decode


class EncodedBatchDataset(Dataset):
    """One batch of files as raw bytes (what the workers do in ``decode="device"`` mode).

    ``dataset[(epoch, batch, indices)]`` -> ``(items, labels, skipped)``: ``items`` a list of
    ``(path, uint8 tensor (N,))``, ``labels`` int64 (B,), ``skipped`` ``[(path, reason)]``.
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        _epoch, _batch, index = key
        items, labels, skipped = [], [], []
        for i in index:
            path = self.paths[i]
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:  # vanished or unreadable since the split was listed
                skipped.append((path, skip_reason(path, e)))
                continue
            items.append((path, torch.frombuffer(bytearray(data), dtype=torch.uint8)))
            labels.append(int(self.labels[i]))
        return items, torch.tensor(labels, dtype=torch.int64), skipped


def decode_jpegs(items: list[tuple[str, torch.Tensor]], device: torch.device, chans: int
                 ) -> tuple[list[torch.Tensor], list[int], list[tuple[str, str]]]:  # fmt: skip
    """Decodes encoded JPEGs on ``device``, all in one batched call when they all decode.

    Args:
        items: ``(path, encoded uint8 (N,))`` pairs (bytes on CPU).
        device: where the decoded images are made (nvJPEG on CUDA).
        chans: 1 (grey) or 3 (RGB); other counts decode as RGB.
    Returns:
        ``(images, kept, skipped)``: uint8 (C, H, W) tensors on ``device``, the positions
        in ``items`` they come from, and ``[(path, reason)]`` for files nothing could read.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if chans == 1 else ImageReadMode.RGB
    # EXIF rotation is a CPU-only option of torchvision's decoder
    extra = {"apply_exif_orientation": True} if device.type == "cpu" else {}
    data = [d for _, d in items]
    if not data:
        return [], [], []
    try:
        return list(decode_jpeg(data, mode=mode, device=device, **extra)), list(range(len(items))), []
    except RuntimeError:
        pass  # one bad file fails the whole call: find it one file at a time
    images, kept, skipped = [], [], []
    for i, (path, d) in enumerate(items):
        try:
            img = decode_jpeg(d, mode=mode, device=device, **extra)
        except RuntimeError:
            try:  # CMYK, progressive oddities, a PNG named .jpg: Pillow reads what it can
                img = load_image_tensor(path, 1 if chans == 1 else 3).to(device)
            except Exception as e:  # noqa: BLE001 - a bad file is skipped by name, never fatal
                skipped.append((path, skip_reason(path, e)))
                continue
        images.append(img)
        kept.append(i)
    return images, kept, skipped


def _resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (1, C, H, W) -> (C, h, w), bilinear, antialiased when shrinking.

    On CPU the uint8 kernel runs and the result stays uint8 (the kernel v2.Resize uses on
    uint8 tensors, so the workers' path and this one agree; far faster than the float one);
    on CUDA the float kernel, and the result stays float 0..255 (rounding back would cost
    three more kernel launches per image).
    """
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    x = _as_work(x)
    return F.interpolate(x, size=size, mode="bilinear", antialias=shrink, align_corners=False)[0]


def _as_work(x: torch.Tensor) -> torch.Tensor:
    """The dtype images are resampled in: uint8 on CPU, float on other devices."""
    return x if x.device.type == "cpu" else x.float()


def resize_short(img: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (C, H', W') (uint8 on CPU, float on GPU) with the shorter side
    ``size`` (torchvision's ``Resize(size)`` rule: the longer side is
    ``int(size * long / short)``), bilinear, antialiased when shrinking (as Pillow and
    v2.Resize(antialias=True))."""
    h, w = img.shape[-2:]
    if h <= w:
        oh, ow = size, int(size * w / h)
    else:
        oh, ow = int(size * h / w), size
    return _resample(img[None], (oh, ow)) if (oh, ow) != (h, w) else _as_work(img)


def crop_resize(img: torch.Tensor, box: Sequence[int], size: int, mirror: bool) -> torch.Tensor:
    """Cuts ``box`` = (top, left, height, width) out of uint8 (C, H, W) and resizes it to
    (C, size, size) (uint8 on CPU, float on GPU), bilinear and antialiased (RandomResizedCrop's
    resampling)."""
    top, left, bh, bw = box
    x = img[None, :, top : top + bh, left : left + bw]
    x = _resample(x, (size, size)) if (bh, bw) != (size, size) else _as_work(x[0])
    return x.flip(-1) if mirror else x


class DeviceDecoder:
    """Turns a batch of encoded JPEGs into a batch (B, C, crop, crop) of 0..255 values on the
    device (uint8 on CPU, float on GPU): decode, then the training geometry (random resized
    crop, or resize + pad-crop; flips) or the evaluation one (resize the shorter side, centre
    crop).

    Args:
        preprocess: the split's preprocess record (``resize``, ``crop``, ``input_size``).
        spec: the augmentation (``policy`` must be None, see ``choose_decode``).
        train: augment (True) or the evaluation geometry.
        device: where decoding and resampling run.
        seed: augmentation draws depend only on (seed, epoch, batch).
    """

    def __init__(self, preprocess: dict, spec: AugmentSpec, train: bool, device: torch.device, seed: int):
        self.resize, self.crop = int(preprocess["resize"]), int(preprocess["crop"])
        self.chans = int(preprocess["input_size"][0])
        self.spec, self.train, self.device, self.seed = spec, bool(train), device, int(seed)

    def __call__(self, items: list, labels: torch.Tensor, epoch: int, batch: int, skipped=()
                 ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:  # fmt: skip
        """Decodes and transforms batch ``batch`` of ``epoch``.

        Args:
            items, labels: an ``EncodedBatchDataset`` batch.
            epoch, batch: seed the augmentation draws.
            skipped: files already skipped in this batch (the readers'); kept in the result.
        Returns:
            ``(x (B', C, crop, crop) 0..255, y (B',), skipped)``: B' < B when files
            could not be decoded; they are added to ``skipped`` with the reason.
        """
        images, kept, bad = decode_jpegs(items, self.device, self.chans)
        skipped = [*skipped, *bad]
        y = labels[kept] if len(kept) != len(labels) else labels
        if not images:
            empty = torch.empty(0, self.chans, self.crop, self.crop, dtype=torch.uint8, device=self.device)
            return empty, y[:0], skipped
        if self.train and self.spec.crop == "rrc":
            x = self._random_resized_crops(images, derive_seed(self.seed, epoch, batch, 5))
        else:
            c = self.crop
            x = torch.stack([batch_ops.center_crop(resize_short(img, self.resize), c) for img in images])
            if self.train:
                x = self._pad_or_flip(x, generator(self.seed, epoch, batch, 5))
        return x, y.to(self.device, non_blocking=True), skipped

    def _random_resized_crops(self, images: list[torch.Tensor], seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        n, spec = len(images), self.spec
        sizes = [tuple(img.shape[-2:]) for img in images]
        boxes: list = [None] * n
        # one vectorised draw per distinct image size (photos often share a few sizes),
        # instead of a few small CPU ops per image on the host's critical path
        for h, w in dict.fromkeys(sizes):
            same = [i for i, s in enumerate(sizes) if s == (h, w)]
            drawn = batch_ops.rrc_boxes(len(same), h, w, spec.scale, spec.ratio, gen).tolist()
            for i, box in zip(same, drawn):
                boxes[i] = [int(v) for v in box]  # (top, left, height, width)
        mirror = (torch.rand(n, generator=gen) < 0.5).tolist() if spec.flip else [False] * n
        crops = [crop_resize(img, box, self.crop, m) for img, box, m in zip(images, boxes, mirror)]
        return torch.stack(crops)  # (B, C, crop, crop)

    def _pad_or_flip(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.spec.crop == "pad":
            return batch_ops.pad_crop_flip(x, self.spec.pad, self.spec.flip, gen)
        return batch_ops.random_flip(x, gen) if self.spec.flip else x

