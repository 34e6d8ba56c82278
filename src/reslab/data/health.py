"""The dataset health check behind ``reslab check`` and the check before every training run.

Every problem kind has a count, the first paths, what it means, how to fix it, and a
``blocking`` flag. Blocking problems make a run meaningless (a class with no images, val
classes that differ from train, validation images that are copies of training images);
everything else is handled automatically (bad files skipped, modes and rotation
normalised) and reported so nothing is dropped silently.

``reslab check`` also compares small embeddings of every image across splits
(``near_duplicate``: resized or re-encoded copies that exact hashes miss); training's
automatic check does not, it costs a decode of every image.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .builtin_datasets import builtin_splits_for_check, resolve_builtin
from .file_checks import (
    MAX_ASPECT,
    MAX_SIDE,
    MIN_SIDE,
    duplicate_groups,
    inspect_images,
    looks_like_image,
)
from .images import MAX_PIXELS
from .near_duplicates import near_duplicates as similar_pairs
from .sources import Scan, scan_source
from .thumbnail_features import thumbnail_features

log = logging.getLogger("reslab.data.health")

MIN_PER_CLASS = 10
IMBALANCE_WARN = 10.0  # largest / smallest class count
NEAR_DUPLICATE_THRESHOLD = 0.98  # cosine of centred thumbnail features; copies score >= 0.99
# Above this many images the near-duplicate check is skipped with a note unless asked for.
# Measured on 2 shared cores: ~0.9 ms per 640x480 JPEG (draft decode) and a 6 s pair search
# at 20,000 images, which grows as N^2 (docs/data.md).
NEAR_DUPLICATE_MAX_IMAGES = 20_000

# kind -> (blocking, what it means and what reslab does, how to fix it)
KINDS: dict[str, tuple[bool, str, str]] = {
    "no_images": (True, "no usable images in the training split", "add images to root/<class>/ folders"),
    "class_mismatch": (True, "splits have different class folders", "give train/val/test the same class folders"),
    "leakage": (True, "exact copies of one file in more than one split (inflates val/test accuracy)", "delete the copies from val/test"),
    "near_duplicate": (True, "near-identical images (resized or re-encoded copies, found by comparing small thumbnails) in more than one split (inflates val/test accuracy)", "remove one copy, or keep both in one split; if the pair shown is really two different images, raise --near-duplicate-threshold"),
    "empty_class": (True, "class folder without usable images", "add images or delete the folder"),
    "single_class": (True, "only one class has training images: a model that always answers it scores 100%", "add the other classes, or pass check='warn' (CLI: data.check=warn) to train anyway"),
    "symlink_loop": (True, "symbolic links pointing back at a folder above them (a cycle); not followed", "delete the links"),
    "duplicate_split": (True, "two folders name the same split (train/ and Train/, val/ and valid/); only the first was read", "merge them into one folder"),
    "conflicting_rows": (True, "CSV rows giving one file two different labels; the first row was kept", "keep one row per file"),
    "zero_byte": (False, "empty files (0 bytes); skipped", "delete them"),
    "not_image": (False, "files that are not images (by extension or content); skipped", "delete or convert them"),
    "corrupt": (False, "unreadable, corrupt or truncated images; skipped", "re-export or delete them"),
    "decompression_bomb": (False, f"more than {MAX_PIXELS / 1e6:.0f} Mpx (decompression-bomb limit); skipped", "downscale them"),
    "mode": (False, "modes other than RGB/L (CMYK, RGBA, P, I;16, LA, ...); converted on load", "none needed"),
    "exif_orientation": (False, "EXIF orientation tag; rotated on load", "none needed"),
    "extreme_size": (False, f"a side under {MIN_SIDE} px or over {MAX_SIDE} px", "check these are real samples"),
    "extreme_aspect": (False, f"aspect ratio over {MAX_ASPECT:g}:1; a centre crop loses most of it", "crop them to the object"),
    "duplicate": (False, "exact duplicate files within one split (over-weighted in training)", "keep one copy"),
    "conflicting_labels": (False, "the same file under two different classes (label noise)", "keep it in the right class only"),
    "small_class": (False, "classes with fewer images than the minimum", "collect more images or merge classes"),
    "imbalance": (False, f"largest / smallest class over {IMBALANCE_WARN:g}", "sampler=balanced or class_weights=auto"),
    "hidden": (False, "hidden files and folders; ignored", "none needed"),
    "stray_file": (False, "files or folders outside class folders; ignored", "move them into a class folder"),
    "duplicate_row": (False, "CSV rows listed more than once; read once", "delete the repeated rows"),
    "symlink": (False, "symbolic links inside the dataset folder; read like the files they point to", "none needed"),
    "link_outside": (False, "symbolic links leading out of the dataset folder; not followed", "copy those files into the dataset folder"),
    "broken_link": (False, "symbolic links to nothing; skipped", "delete or fix them"),
    "run_folder": (False, "reslab run folders inside the data folder (--out inside the data?); ignored", "write runs outside the data folder (--out elsewhere)"),
    "missing_file": (False, "files listed in the CSV that do not exist, or folders that cannot be read; skipped", "fix the paths (relative to the CSV)"),
}  # fmt: skip
# Problem kinds whose files ``load_dataset`` leaves out before decoding.
EXCLUDED_KINDS = ("zero_byte", "not_image")


@dataclass
class Problem:
    """One kind of problem: how many, the first paths, and whether it blocks training."""

    kind: str
    count: int
    blocking: bool
    message: str
    fix: str
    paths: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("kind", "count", "blocking", "message", "fix", "paths")}
        if self.details:
            d["details"] = self.details
        return d


@dataclass
class HealthReport:
    """The outcome of ``check_dataset``.

    Attributes:
        source: what was checked.
        full: True when every image was decoded (``reslab check``), False for the fast check.
        problems: one ``Problem`` per kind found, blocking ones first.
        stats: image counts per split and class, imbalance ratio.
        excluded: paths ``load_dataset`` must leave out (not in ``to_dict``).
        groups: ``{path: content hash}`` of exact duplicates (keeps them on one side of a split).
    """

    source: str
    full: bool
    problems: list[Problem]
    stats: dict[str, Any]
    excluded: set[str] = field(default_factory=set, repr=False)
    groups: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def blocking(self) -> bool:
        return any(p.blocking for p in self.problems)

    def problem(self, kind: str) -> Problem | None:
        return next((p for p in self.problems if p.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "full": self.full,
            "blocking": self.blocking,
            "blocking_kinds": [p.kind for p in self.problems if p.blocking],
            "problems": [p.to_dict() for p in self.problems],
            "stats": self.stats,
        }

    def summary(self, max_paths: int = 3) -> str:
        """A few readable lines for logs: one per problem kind."""
        n = self.stats.get("images", 0)
        head = f"data check ({'full' if self.full else 'fast'}): {n} images, "
        if not self.problems:
            return head + "no problems found"
        nb = sum(p.blocking for p in self.problems)
        lines = [head + f"{len(self.problems)} problem kinds ({nb} blocking)"]
        for p in self.problems:
            tag = "BLOCKING" if p.blocking else "warning "
            eg = ", ".join(p.paths[:max_paths])
            lines.append(f"  {tag} {p.kind}: {p.count} - {p.message}" + (f" (e.g. {eg})" if eg else ""))
        return "\n".join(lines)


def refuse_blocking(report: HealthReport) -> None:
    """Raises the ``DataError`` training gives for blocking problems: each kind, a few
    paths, its fix, and the three ways to train anyway."""
    kinds = [p for p in report.problems if p.blocking]
    lines = "\n".join(f"  {p.kind}: {p.count} ({p.message}); e.g. {', '.join(p.paths[:3])}. Fix: {p.fix}"
                      for p in kinds)  # fmt: skip
    raise DataError(
        f"{report.source} has problems that make training meaningless:\n{lines}\n"
        f"Run 'reslab check {report.source}' for the full report and fix them, or train anyway "
        "with data.check=warn on the command line (reslab train ... data.check=warn), "
        "check='warn' in Python (load_dataset(..., check='warn')) or data: {check: warn} in a config."
    )


def _add(problems: dict, kind: str, paths: list[str], details: list[str] | None = None, count=None):
    if not paths and not count:
        return
    blocking, message, fix = KINDS[kind]
    p = problems.setdefault(kind, Problem(kind, 0, blocking, message, fix))
    p.count += len(paths) if count is None else count
    p.paths.extend(paths)
    if details:
        p.details.extend(details)


def _class_checks(problems, stats, class_dirs, counts, min_per_class, rel):
    """Empty and small classes, imbalance, class mismatch between splits."""
    ref = "train" if "train" in class_dirs else None
    for split, names in class_dirs.items():
        for name in names:
            n = counts.get((split, name), 0)
            where = f"{split}/{name}" if split else name
            if n == 0:
                _add(problems, "empty_class", [where])
            elif split == ref and n < min_per_class:
                _add(problems, "small_class", [where], [f"{where}: {n} images (minimum {min_per_class})"])
    ref_counts = [counts.get((ref, c), 0) for c in class_dirs.get(ref, [])]
    nonzero = [c for c in ref_counts if c > 0]
    if len(nonzero) == 1:
        only = next(c for c in class_dirs[ref] if counts.get((ref, c), 0))
        _add(problems, "single_class", [f"{ref}/{only}" if ref else only], count=1)
    ratio = max(nonzero) / min(nonzero) if nonzero else 0.0
    stats["imbalance_ratio"] = round(ratio, 2)
    if ratio > IMBALANCE_WARN:
        _add(problems, "imbalance", [], [f"largest/smallest = {ratio:.1f}"], count=1)
    if ref is not None:
        train_set = set(class_dirs[ref])
        for split, names in class_dirs.items():
            if split == ref:
                continue
            missing, extra = sorted(train_set - set(names)), sorted(set(names) - train_set)
            if missing or extra:
                detail = f"{split} vs train: missing {missing}, extra {extra}"
                paths = [f"{split}/{c} (not in {ref})" for c in extra]
                paths += [f"{ref}/{c} (not in {split})" for c in missing]
                _add(problems, "class_mismatch", paths, [detail])


def _duplicate_checks(problems, entries, groups, rel):
    """Duplicates within a split, leakage across splits, same file under two labels."""
    members = defaultdict(list)
    for e in entries:
        if e.path in groups:
            members[groups[e.path]].append(e)
    order = {"train": 0, None: 0, "val": 1, "test": 2}
    for group in members.values():
        group.sort(key=lambda e: (order[e.split], e.path))
        first_by_split = {}
        for e in group:
            if e.split in first_by_split:
                _add(problems, "duplicate", [rel(e.path)], [f"{rel(e.path)} == {rel(first_by_split[e.split].path)}"])
            else:
                first_by_split[e.split] = e
        firsts = list(first_by_split.values())
        for e in firsts[1:]:
            _add(problems, "leakage", [rel(e.path)], [f"{rel(e.path)} == {rel(firsts[0].path)}"])
        labels = sorted({e.label for e in group})
        if len(labels) > 1:
            _add(problems, "conflicting_labels", [rel(e.path) for e in group], [f"classes {labels}"], count=1)


def _near_duplicate_check(problems, stats, entries, groups, rel, run: bool | None, threshold: float):
    """Pairs across splits whose thumbnail embeddings are near-identical (``near_duplicate``).

    ``run``: False skips; None runs up to ``NEAR_DUPLICATE_MAX_IMAGES`` images and skips
    above with a note in ``stats``; True always runs. Pairs that are exact copies (same
    content hash) are left to ``leakage``.
    """
    splits = {e.split for e in entries}
    if run is False or len(splits) < 2:
        if run is not False:
            stats["near_duplicates"] = {"skipped": "one split only: nothing to compare across"}
        return
    if run is None and len(entries) > NEAR_DUPLICATE_MAX_IMAGES:
        stats["near_duplicates"] = {"skipped": f"{len(entries)} images > {NEAR_DUPLICATE_MAX_IMAGES}; "
                                    "pass near_duplicates=True (CLI: --near-duplicates) to run it"}  # fmt: skip
        log.info("near-duplicate check skipped: %s", stats["near_duplicates"]["skipped"])
        return
    order = {"train": 0, None: 0, "val": 1, "test": 2}
    ordered = sorted(entries, key=lambda e: (order.get(e.split, 3), e.path))  # train side first
    split_of = {e.path: e.split for e in ordered}
    emb, kept, _ = thumbnail_features([e.path for e in ordered])  # unreadable ones: see "corrupt"
    pairs = similar_pairs(emb, kept, threshold, groups=[split_of[p] for p in kept], block=1024)
    pairs = [(a, b, sim) for a, b, sim in pairs if groups.get(a) is None or groups.get(a) != groups.get(b)]
    for a, b, sim in pairs:
        _add(problems, "near_duplicate", [rel(b)], [f"{rel(b)} ~ {rel(a)} (similarity {sim:.3f})"])
    stats["near_duplicates"] = {"images": len(kept), "threshold": threshold, "pairs": len(pairs)}


def check_scan(scan: Scan, *, full: bool = True, min_per_class: int = MIN_PER_CLASS,
               near_duplicates: bool | None = False,
               near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD) -> HealthReport:
    """Runs the health check on an already scanned folder or CSV (see ``check_dataset``).

    ``near_duplicates`` defaults to False here: training calls this before every run.
    """
    problems: dict[str, Problem] = {}
    rel = scan.rel
    for kind, paths in scan.set_aside.items():
        _add(problems, kind, [rel(p) for p in paths])
    excluded: set[str] = set()
    zero = [e.path for e in scan.entries if e.size == 0]
    _add(problems, "zero_byte", [rel(p) for p in zero])
    excluded.update(zero)
    fake = [e.path for e in scan.entries if e.size > 0 and not looks_like_image(e.path)]
    _add(problems, "not_image", [rel(p) for p in fake])
    excluded.update(fake)
    entries = [e for e in scan.entries if e.path not in excluded]

    if full:
        findings = inspect_images([e.path for e in entries])
        bad = set()
        for path, found in findings.items():
            for kind, detail in found:
                _add(problems, kind, [rel(path)], [f"{rel(path)}: {detail}"])
                if kind in ("corrupt", "decompression_bomb"):
                    bad.add(path)
        entries = [e for e in entries if e.path not in bad]

    groups = duplicate_groups([e.path for e in entries], [e.size for e in entries])
    _duplicate_checks(problems, entries, groups, rel)

    counts = Counter((e.split, e.label) for e in entries)
    stats: dict[str, Any] = {"images": len(entries), "layout": scan.kind, "splits": {}}
    for split, names in scan.class_dirs.items():
        per_class = {c: counts.get((split, c), 0) for c in names}
        stats["splits"][split or "all"] = {"images": sum(per_class.values()), "classes": per_class}
    _class_checks(problems, stats, scan.class_dirs, counts, min_per_class, rel)
    _near_duplicate_check(problems, stats, entries, groups, rel, near_duplicates, near_duplicate_threshold)
    train_split = "train" if "train" in scan.class_dirs else None
    if not any(e.split == train_split for e in entries):
        _add(problems, "no_images", [str(scan.root)])

    ordered = sorted(problems.values(), key=lambda p: (not p.blocking, list(KINDS).index(p.kind)))
    for p in ordered:
        p.paths = p.paths[:10]
        p.details = p.details[:10]
    return HealthReport(str(scan.root), full, ordered, stats, excluded, groups)


def tensor_groups(images: torch.Tensor) -> np.ndarray:
    """Group id per image: equal ids mean pixel-identical images (exact duplicates).

    Each image's bytes, read as int64 words, are hashed with random odd multipliers (a
    vectorised universal hash, ~10 ms for 60k images); images sharing a hash are then
    compared byte for byte, so the grouping is exact.
    """
    n = len(images)
    flat = images.reshape(n, -1).contiguous()
    if flat.shape[1] % 8:
        flat = torch.nn.functional.pad(flat, (0, 8 - flat.shape[1] % 8))
    words = flat.view(torch.int64)  # (N, L / 8)
    gen = torch.Generator().manual_seed(0x9E3779B9)
    mult = torch.randint(-(2**62), 2**62, (words.shape[1],), generator=gen, dtype=torch.int64) | 1
    h = (words * mult).sum(1).numpy()  # int64 wrap-around arithmetic
    _, first, ids = np.unique(h, return_index=True, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    counts = np.bincount(ids)
    next_id = len(first)
    for gid in np.nonzero(counts > 1)[0]:
        members = np.nonzero(ids == gid)[0]
        ref = flat[members[0]]
        for m in members[1:]:
            if not torch.equal(flat[m], ref):  # a hash collision, not a duplicate
                ids[m] = next_id
                next_id += 1
    return ids


def check_tensors(source: str, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], classes: list[str],
                  min_per_class: int = MIN_PER_CLASS, official: bool = True) -> HealthReport:
    """Health check of an in-memory dataset (built-ins): duplicates, leakage, class counts.

    Args:
        source: name shown in the report.
        splits: ``{name: (images uint8 (N, C, H, W), labels)}``.
        classes: index -> name.
        min_per_class: threshold of ``small_class``.
        official: the splits are the dataset's published ones; leakage between them is
            reported but not blocking (everyone's benchmark numbers include it).
    """
    problems: dict[str, Problem] = {}
    names = list(splits)
    sizes = [len(splits[n][0]) for n in names]
    ids = tensor_groups(torch.cat([splits[n][0] for n in names]))
    owners = np.repeat(np.arange(len(names)), sizes)
    offsets = np.cumsum([0] + sizes)
    uniq, first = np.unique(ids, return_index=True)
    first_of = first[np.searchsorted(uniq, ids)]
    seen: set[tuple[int, int]] = set()  # (group, split) pairs met so far
    for i in np.nonzero(first_of != np.arange(len(ids)))[0].tolist():
        j, oi, oj = int(first_of[i]), int(owners[i]), int(owners[first_of[i]])
        where, orig = f"{names[oi]}[{i - offsets[oi]}]", f"{names[oj]}[{j - offsets[oj]}]"
        # like folders: a second copy inside one split is a duplicate, the first copy in
        # another split is leakage
        kind = "duplicate" if oi == oj or (int(ids[i]), oi) in seen else "leakage"
        seen.add((int(ids[i]), oi))
        _add(problems, kind, [where], [f"{where} == {orig}"])
    if official and "leakage" in problems:
        problems["leakage"].blocking = False
        problems["leakage"].message += " (published split: reported, not blocking)"
    counts = Counter()
    for n in names:
        per = torch.bincount(splits[n][1], minlength=len(classes)).tolist()
        counts.update({(n, classes[c]): k for c, k in enumerate(per)})
    stats: dict[str, Any] = {"images": int(sum(sizes)), "layout": "builtin", "splits": {}}
    for n in names:
        per_class = {c: counts.get((n, c), 0) for c in classes}
        stats["splits"][n] = {"images": len(splits[n][0]), "classes": per_class}
    _class_checks(problems, stats, {n: list(classes) for n in names}, counts, min_per_class, str)
    ordered = sorted(problems.values(), key=lambda p: (not p.blocking, list(KINDS).index(p.kind)))
    for p in ordered:
        p.paths, p.details = p.paths[:10], p.details[:10]
    return HealthReport(source, True, ordered, stats)


def check_dataset(
    source: str | os.PathLike,
    *,
    full: bool = True,
    min_per_class: int = MIN_PER_CLASS,
    near_duplicates: bool | None = None,
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> HealthReport:
    """Scans a dataset and reports every problem kind with counts and first paths.

    Args:
        source: an image folder, a CSV manifest or a built-in name (``fashion-mnist``, ...).
        full: decode every image (corrupt files, modes, EXIF, sizes, bombs); False runs only
            the file-level checks that training runs first (size, signature, duplicates,
            classes).
        min_per_class: classes with fewer training images are reported as ``small_class``.
        near_duplicates: compare thumbnail embeddings across splits (folders and CSVs) to
            find resized or re-encoded copies (``near_duplicate``). None (default): with a
            full check, up to ``NEAR_DUPLICATE_MAX_IMAGES`` images; True: always; False: never.
        near_duplicate_threshold: cosine similarity (-1..1) from which a pair is reported.
    Returns:
        A ``HealthReport``; ``report.blocking`` says whether training should refuse it.
    """
    if not -1.0 <= near_duplicate_threshold <= 1.0:
        raise ConfigError(f"near_duplicate_threshold={near_duplicate_threshold!r} is a cosine "
                          "similarity: use -1..1 (default 0.98).")
    builtin = resolve_builtin(source)
    if builtin is not None:
        splits, classes = builtin_splits_for_check(*builtin)
        return check_tensors(str(source), splits, classes, min_per_class)
    if near_duplicates is None and not full:
        near_duplicates = False  # the fast check stays file-level
    return check_scan(scan_source(source), full=full, min_per_class=min_per_class,
                      near_duplicates=near_duplicates, near_duplicate_threshold=near_duplicate_threshold)
