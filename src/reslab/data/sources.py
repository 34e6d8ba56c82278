"""Finding the files of an image folder or a CSV manifest (no decoding here).

Layouts understood:
  * ``root/train/<class>/*``, ``root/val/<class>/*`` (also ``valid``, ``validation``),
    optional ``root/test/<class>/*``; files may sit in sub-folders of a class folder;
  * ``root/<class>/*`` (no split: ``load_dataset`` makes a stratified one);
  * a CSV manifest ``path,label[,split]`` with paths relative to the CSV file.

Hidden files, files without an image extension and files outside class folders are set
aside with a reason (they show up in the health report), never silently dropped.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .images import is_image_file

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class FileEntry:
    """One candidate image: where it is, its class name and split (None: not split yet)."""

    path: str
    label: str
    split: str | None
    size: int = 0


@dataclass
class Scan:
    """What a folder or CSV holds.

    Attributes:
        root: the folder (or the CSV's folder).
        kind: ``folder-split``, ``folder`` or ``csv``.
        entries: candidate images.
        class_dirs: ``{split: [class names]}`` as found on disk (including empty ones).
        set_aside: ``{kind: [paths]}`` for hidden, non-image, stray or missing files.
    """

    root: Path
    kind: str
    entries: list[FileEntry]
    class_dirs: dict[str | None, list[str]]
    set_aside: dict[str, list[str]] = field(default_factory=dict)

    def rel(self, path: str) -> str:
        """Path relative to the root, for readable reports."""
        try:
            return os.path.relpath(path, self.root)
        except ValueError:
            return path


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX") or name == "Thumbs.db"


def _walk_class(folder: Path, label: str, split: str | None, scan: Scan) -> None:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        hidden_dirs = [d for d in dirnames if _is_hidden(d)]
        for d in hidden_dirs:
            scan.set_aside.setdefault("hidden", []).append(os.path.join(dirpath, d))
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if _is_hidden(name):
                scan.set_aside.setdefault("hidden", []).append(path)
            elif not is_image_file(name):
                scan.set_aside.setdefault("not_image", []).append(path)
            else:
                try:
                    size = os.path.getsize(path)
                except OSError:
                    scan.set_aside.setdefault("missing_file", []).append(path)
                    continue
                scan.entries.append(FileEntry(path, label, split, size))


def _scan_split_dir(folder: Path, split: str | None, scan: Scan) -> None:
    classes = []
    for child in sorted(folder.iterdir()):
        if _is_hidden(child.name):
            scan.set_aside.setdefault("hidden", []).append(str(child))
        elif child.is_dir():
            classes.append(child.name)
            _walk_class(child, child.name, split, scan)
        else:
            scan.set_aside.setdefault("stray_file", []).append(str(child))
    scan.class_dirs[split] = classes


def scan_folder(root: str | os.PathLike) -> Scan:
    """Lists the images of an image folder (either layout), in a deterministic order.

    Args:
        root: the dataset folder.
    Returns:
        A ``Scan``; ``kind`` is ``folder-split`` when train/val/test folders exist.
    Raises:
        DataError when the folder does not exist or holds no class folders.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder. Expected root/<class>/*.jpg or root/train/<class>/*.")
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name)}
    split_dirs = {SPLIT_NAMES[n]: p for n, p in subdirs.items() if n in SPLIT_NAMES}
    if "train" in split_dirs:
        scan = Scan(root, "folder-split", [], {})
        for split in ("train", "val", "test"):
            if split in split_dirs:
                _scan_split_dir(split_dirs[split], split, scan)
        extra = sorted(n for n in subdirs if n not in SPLIT_NAMES)
        if extra:
            scan.set_aside.setdefault("stray_file", []).extend(str(subdirs[n]) for n in extra)
    else:
        if split_dirs:
            raise DataError(
                f"{root} has {sorted(split_dirs)} folders but no 'train' folder. Expected "
                "root/train/<class>/* (plus val/ and test/), or root/<class>/* without splits."
            )
        scan = Scan(root, "folder", [], {})
        _scan_split_dir(root, None, scan)
    if not any(scan.class_dirs.values()):
        raise DataError(
            f"{root} has no class folders. Expected root/<class>/<image files> (one folder per "
            "class), or root/train/<class>/* with root/val/<class>/*."
        )
    return scan


def _label_sort_key(labels: set[str]):
    if all(lbl.lstrip("-").isdigit() for lbl in labels):
        return lambda s: int(s)  # "2" before "10" when every label is a number
    return lambda s: s


def scan_csv(path: str | os.PathLike) -> Scan:
    """Reads a CSV manifest: columns ``path,label`` and optionally ``split`` (train/val/test).

    A header row is optional; paths are relative to the CSV file's folder (absolute ones
    are kept). Rows whose file does not exist are set aside as ``missing_file``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} does not exist. Expected a CSV manifest with columns path,label.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} is empty. Expected rows 'path,label' (paths relative to the CSV).")
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header and "label" in header:
        cols = {"path": header.index("path"), "label": header.index("label")}
        if "split" in header:
            cols["split"] = header.index("split")
        rows = rows[1:]
    else:
        cols = {"path": 0, "label": 1}
    root = path.parent
    scan = Scan(root, "csv", [], {})
    for row in rows:
        if len(row) <= max(cols.values()):
            raise DataError(f"{path}, row {row!r}: expected columns {list(cols)}; fix or remove it.")
        rel, label = row[cols["path"]].strip(), row[cols["label"]].strip()
        split = None
        if "split" in cols:
            raw = row[cols["split"]].strip().lower()
            if raw not in SPLIT_NAMES:
                raise DataError(f"{path}, row {row!r}: split {raw!r} is not train, val or test.")
            split = SPLIT_NAMES[raw]
        full = str(Path(rel) if os.path.isabs(rel) else root / rel)
        if _is_hidden(os.path.basename(full)):
            scan.set_aside.setdefault("hidden", []).append(full)
        elif not os.path.isfile(full):
            scan.set_aside.setdefault("missing_file", []).append(full)
        elif not is_image_file(full):
            scan.set_aside.setdefault("not_image", []).append(full)
        else:
            scan.entries.append(FileEntry(full, label, split, os.path.getsize(full)))
    labels = {e.label for e in scan.entries}
    if "split" in cols:
        scan.kind = "csv-split"
        for split in ("train", "val", "test"):
            names = {e.label for e in scan.entries if e.split == split}
            if names:
                scan.class_dirs[split] = sorted(names, key=_label_sort_key(labels))
        if "train" not in scan.class_dirs:
            raise DataError(f"{path}: the split column has no 'train' rows.")
    else:
        scan.class_dirs[None] = sorted(labels, key=_label_sort_key(labels))
    return scan


def scan_source(source: str | os.PathLike) -> Scan:
    """``scan_csv`` for ``*.csv`` files, else ``scan_folder``."""
    if str(source).lower().endswith(".csv"):
        return scan_csv(source)
    return scan_folder(source)
