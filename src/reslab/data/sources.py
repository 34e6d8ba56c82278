"""Finding the files of an image folder or a CSV manifest (no decoding here).

Layouts understood:
  * ``root/train/<class>/*``, ``root/val/<class>/*`` (also ``valid``, ``validation``),
    optional ``root/test/<class>/*``; files may sit in sub-folders of a class folder;
  * ``root/<class>/*`` (no split: ``load_dataset`` makes a stratified one);
  * a CSV manifest ``path,label[,split]`` with paths relative to the CSV file.

Hidden files, files without an image extension and files outside class folders are set
aside with a reason (they show up in the health report), never silently dropped. Symbolic
links are read only inside the dataset folder and never into a cycle; each is reported.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import ConfigError, DataError
from ..run_folder import RunFolder
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

    @cached_property
    def real_root(self) -> str:
        """The root with every link resolved: the boundary no link may lead out of."""
        return os.path.realpath(self.root)

    def rel(self, path: str) -> str:
        """Path relative to the root, for readable reports."""
        try:
            return os.path.relpath(path, self.root)
        except ValueError:
            return path


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX") or name == "Thumbs.db"


def _inside(path: str, root: str) -> bool:
    """True when the real path ``path`` lies in (or is) the real folder ``root``."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def looks_like_run_folder(path: str | os.PathLike) -> bool:
    """True for a reslab run folder (its marker, a checkpoints/ folder or a run's record):
    one written into the data by an ``--out`` inside the data folder."""
    run = RunFolder(path)
    return run.is_run() or run.checkpoints.is_dir() or run.metrics_jsonl.exists()


def _follow(path: str, parent_real: str, scan: Scan) -> str | None:
    """The real path to read for a directory entry, or None when it must not be read.

    A symbolic link is read only when it stays inside the dataset folder and does not point
    back at a folder above it (a cycle: ``dog/loop -> ..`` would list the class again and
    again). Every link is reported, so nothing is followed or dropped silently.
    """
    if not os.path.islink(path):
        return os.path.join(parent_real, os.path.basename(path))
    target = os.path.realpath(path)
    if not os.path.exists(target):
        scan.set_aside.setdefault("broken_link", []).append(path)
        return None
    if not _inside(target, scan.real_root):
        scan.set_aside.setdefault("link_outside", []).append(path)
        return None
    if os.path.isdir(target) and _inside(parent_real, target):
        scan.set_aside.setdefault("symlink_loop", []).append(path)
        return None
    scan.set_aside.setdefault("symlink", []).append(path)
    return target


def _add_file(path: str, label: str, split: str | None, scan: Scan) -> None:
    if _is_hidden(os.path.basename(path)):
        scan.set_aside.setdefault("hidden", []).append(path)
    elif not is_image_file(path):
        scan.set_aside.setdefault("not_image", []).append(path)
    else:
        try:
            size = os.path.getsize(path)
        except OSError:
            scan.set_aside.setdefault("missing_file", []).append(path)
            return
        scan.entries.append(FileEntry(path, label, split, size))


def _walk_class(folder: str, real: str, label: str, split: str | None, scan: Scan) -> None:
    """Lists a class folder and its sub-folders without ever leaving the dataset folder.

    Directories are walked without following links (``os.walk(followlinks=False)``'s
    rule, through ``os.scandir``: no extra system call per plain file); a link is read only
    after ``_follow`` checked its real path, and a real folder is read at most once, so
    the walk always ends.
    """
    stack = [(folder, real)]
    seen = {real}
    while stack:
        dirpath, dir_real = stack.pop()
        try:
            with os.scandir(dirpath) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            scan.set_aside.setdefault("missing_file", []).append(dirpath)
            continue
        subdirs = []
        for entry in entries:
            if _is_hidden(entry.name):
                scan.set_aside.setdefault("hidden", []).append(entry.path)
                continue
            if entry.is_symlink():
                target = _follow(entry.path, dir_real, scan)
                if target is None:
                    continue
                is_dir = os.path.isdir(target)
            else:
                target, is_dir = os.path.join(dir_real, entry.name), entry.is_dir(follow_symlinks=False)
            if not is_dir:
                _add_file(entry.path, label, split, scan)
            elif looks_like_run_folder(target):
                scan.set_aside.setdefault("run_folder", []).append(entry.path)
            elif target not in seen:  # a link to a folder already read adds nothing
                seen.add(target)
                subdirs.append((entry.path, target))
        stack.extend(reversed(subdirs))  # popped last-in: sub-folders in sorted order


def _scan_split_dir(folder: str, real: str, split: str | None, scan: Scan) -> None:
    classes: list[str] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # unreadable: reported, and the split has no classes
        scan.set_aside.setdefault("missing_file", []).append(folder)
        names = []
    for name in names:
        child = os.path.join(folder, name)
        if _is_hidden(name):
            scan.set_aside.setdefault("hidden", []).append(child)
            continue
        target = _follow(child, real, scan)
        if target is None:
            continue
        if not os.path.isdir(target):
            scan.set_aside.setdefault("stray_file", []).append(child)
        elif looks_like_run_folder(target):
            scan.set_aside.setdefault("run_folder", []).append(child)
        else:
            before, runs = len(scan.entries), len(scan.set_aside.get("run_folder", []))
            _walk_class(child, target, name, split, scan)
            if len(scan.entries) == before and len(scan.set_aside.get("run_folder", [])) > runs:
                continue  # a folder holding only runs (--out data/runs/x) is not a class
            classes.append(name)
    scan.class_dirs[split] = classes


def _split_folders(root: Path, scan: Scan) -> dict[str, tuple[str, str]]:
    """``{split: (path, real path)}``; a second folder naming a split already found
    (``Train/`` beside ``train/``, ``valid/`` beside ``val/``) is set aside as blocking."""
    found: dict[str, tuple[str, str]] = {}
    for name in sorted(os.listdir(root)):
        split = SPLIT_NAMES.get(name.lower())
        child = os.path.join(root, name)
        if split is None or _is_hidden(name) or not os.path.isdir(child):
            continue
        if split in found:
            scan.set_aside.setdefault("duplicate_split", []).append(
                f"{child} (and {os.path.basename(found[split][0])}/)")
            continue
        target = _follow(child, scan.real_root, scan)
        if target is not None:
            found[split] = (child, target)
    return found


def scan_folder(root: str | os.PathLike) -> Scan:
    """Lists the images of an image folder (either layout), in a deterministic order.

    Symbolic links are read only when they stay inside ``root`` and form no cycle; every
    link is reported (see ``_follow``).

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
    scan = Scan(root, "folder", [], {})
    try:
        split_dirs = _split_folders(root, scan)
    except OSError as e:
        raise DataError(f"{root} cannot be listed ({e.strerror}); check its permissions.") from None
    if "train" in split_dirs:
        scan.kind = "folder-split"
        for split in ("train", "val", "test"):
            if split in split_dirs:
                _scan_split_dir(*split_dirs[split], split, scan)
        taken = {os.path.basename(p) for p, _ in split_dirs.values()}
        for name in sorted(os.listdir(root)):
            child = os.path.join(root, name)
            if name in taken or _is_hidden(name) or SPLIT_NAMES.get(name.lower()):
                continue
            kind = "run_folder" if os.path.isdir(child) and looks_like_run_folder(child) else "stray_file"
            if os.path.isdir(child):
                scan.set_aside.setdefault(kind, []).append(child)
    else:
        if split_dirs:
            raise DataError(
                f"{root} has {sorted(split_dirs)} folders but no 'train' folder. Expected "
                "root/train/<class>/* (plus val/ and test/), or root/<class>/* without splits."
            )
        _scan_split_dir(str(root), scan.real_root, None, scan)
    if not any(scan.class_dirs.values()):
        links = sorted(set(scan.set_aside.get("link_outside", []) + scan.set_aside.get("symlink_loop", [])))
        why = (f" (links lead out of it or into a cycle and are not followed: {links[:3]}; copy the "
               "linked data into the folder, or point at the real folder)") if links else ""  # fmt: skip
        raise DataError(
            f"{root} has no class folders{why}. Expected root/<class>/<image files> (one folder "
            "per class), or root/train/<class>/* with root/val/<class>/*."
        )
    return scan


def check_out_not_inside(data: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuses a run folder inside an image-folder dataset, before anything is written.

    A run folder under the data would be scanned as a class (or set aside) on the next
    load, and its files mixed with the user's images.

    Args:
        data: the data source (only a folder can contain the run; CSVs and built-ins pass).
        out: the run folder (``--out``).
    Raises:
        ConfigError naming both folders when ``out`` is ``data`` or lies inside it.
    """
    if not os.path.isdir(data):
        return
    root, run = os.path.realpath(data), os.path.realpath(out)
    if _inside(run, root):
        raise ConfigError(
            f"--out {out} is inside the data folder {data}: the run's files would be read as "
            f"training data. Choose an --out outside {data}, e.g. --out runs/<name>."
        )


def _label_sort_key(labels: set[str]):
    if all(lbl.lstrip("-").isdigit() for lbl in labels):
        return lambda s: int(s)  # "2" before "10" when every label is a number
    return lambda s: s


def _read_csv_rows(path: Path) -> list[list[str]]:
    """The non-blank rows of a CSV file; a ``DataError`` naming the encoding for non-UTF-8."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start}). "
            "Save the manifest as UTF-8 (in a spreadsheet: 'CSV UTF-8'; or run "
            f"iconv -f latin1 -t utf-8 {path.name} > fixed.csv) and use that file."
        ) from None
    except csv.Error as e:
        raise DataError(f"{path} is not a readable CSV file ({e}). Expected rows 'path,label'.") from None
    if not rows:
        raise DataError(f"{path} is empty. Expected rows 'path,label' (paths relative to the CSV).")
    return rows


def _csv_columns(path: Path, rows: list[list[str]]) -> tuple[dict[str, int], list[list[str]]]:
    """``({column: index}, data rows)``: a header is required unless the first row starts
    with an image file name (a header-less ``path,label`` manifest)."""
    first = [c.strip() for c in rows[0]]
    if is_image_file(first[0]) and "label" not in (c.lower() for c in first):
        return {"path": 0, "label": 1}, rows
    header = [c.lower() for c in first]
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise DataError(
            f"{path}: the header has no {' or '.join(repr(c) for c in missing)} column; columns "
            f"found: {first}. Expected a header 'path,label' (optionally ',split'), or no header "
            "with the image path in column 1 and the label in column 2."
        )
    cols = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    return cols, rows[1:]


def _csv_entry(path: Path, row: list[str], cols: dict[str, int]) -> tuple[str, str, str | None]:
    """``(full path, label, split)`` of one data row."""
    if len(row) <= max(cols.values()):
        raise DataError(f"{path}, row {row!r}: expected columns {list(cols)}; fix or remove it.")
    rel, label = row[cols["path"]].strip(), row[cols["label"]].strip()
    split = None
    if "split" in cols:
        raw = row[cols["split"]].strip().lower()
        if raw not in SPLIT_NAMES:
            raise DataError(f"{path}, row {row!r}: split {raw!r} is not train, val or test.")
        split = SPLIT_NAMES[raw]
    full = str(Path(rel) if os.path.isabs(rel) else path.parent / rel)
    return full, label, split


def scan_csv(path: str | os.PathLike) -> Scan:
    """Reads a CSV manifest: columns ``path,label`` and optionally ``split`` (train/val/test).

    A header row is required unless the first row starts with an image path; paths are
    relative to the CSV file's folder (absolute ones are kept). Rows whose file does not
    exist are set aside as ``missing_file``; a repeated row is read once
    (``duplicate_row``); a file listed under two labels keeps its first row and is reported
    as blocking (``conflicting_rows``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} does not exist. Expected a CSV manifest with columns path,label.")
    cols, rows = _csv_columns(path, _read_csv_rows(path))
    scan = Scan(path.parent, "csv", [], {})
    first_label: dict[str, str] = {}
    for row in rows:
        full, label, split = _csv_entry(path, row, cols)
        if full in first_label:
            kind = "duplicate_row" if first_label[full] == label else "conflicting_rows"
            scan.set_aside.setdefault(kind, []).append(f"{full} ({first_label[full]!r}, {label!r})"
                                                       if kind == "conflicting_rows" else full)  # fmt: skip
            continue
        first_label[full] = label
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
