"""Helpers for tests/test_hostile_cli.py: run the real ``reslab`` command in a subprocess,
build small hostile inputs (image folders, CSVs, checkpoints), photograph a folder's bytes,
and a server that accepts connections and never answers (issue 17)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")

# One epoch on a sliver of digits: a whole training run takes seconds. The fused
# BatchNorm+ReLU kernel is off so no test waits for a compile (~30 s on a new machine).
FAST = ["threads=1", "data.limit_train=96", "data.limit_val=48"]


@dataclass
class Result:
    """What one ``reslab`` command did: its exit code and everything it printed."""

    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err

    def __str__(self) -> str:  # shown by pytest when an assertion on it fails
        return f"exit {self.rc}\n--- stdout ---\n{self.out[-3000:]}\n--- stderr ---\n{self.err[-3000:]}"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``reslab`` subprocess: this checkout's src first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("RESLAB_FUSED_BN", "0")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def reslab(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 240,
           env: dict[str, str] | None = None) -> Result:  # fmt: skip
    """Runs ``python -m reslab ARGS`` and returns what it did.

    Args:
        args: the command line after ``reslab``.
        cwd: working folder (default: the caller's).
        timeout: seconds before the command counts as hung (the test then fails, naming it).
        env: the full environment (default ``cli_env()``).

    Returns:
        Result with the exit code and both output streams.
    """
    cmd = [sys.executable, "-m", "reslab", *map(str, args)]
    try:
        p = subprocess.run(cmd, check=False, cwd=cwd, env=env or cli_env(), capture_output=True, text=True,
                           errors="replace", timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"`reslab {' '.join(map(str, args))}` hung: no exit within {timeout:g} s") from e
    return Result(p.returncode, p.stdout, p.stderr)


def assert_clean(res: Result, codes: int | tuple[int, ...]) -> None:
    """No traceback anywhere, and one of the documented exit codes."""
    codes = (codes,) if isinstance(codes, int) else codes
    assert "Traceback" not in res.text, str(res)
    assert res.rc in codes, f"expected exit code {codes}\n{res}"


def has_any(text: str, *words: str) -> bool:
    """True when ``text`` holds one of ``words`` (case-insensitive)."""
    low = text.lower()
    return any(w.lower() in low for w in words)


def snapshot(folder: str | os.PathLike) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), links not followed."""
    root = Path(folder)
    files = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                files[str(p.relative_to(root))] = p.read_bytes()
    return files


def image_folder(root: str | os.PathLike, classes=("cat", "dog"), per_class: int = 10, size: int = 12,
                 mode: str = "RGB", seed: int = 0) -> Path:  # fmt: skip
    """``root/<class>/<i>.png``: classes told apart by brightness, with noise.

    Returns:
        The folder.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        level = 40 + 170 * c / max(1, len(classes) - 1)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            px = np.clip(rng.normal(level, 25, shape), 0, 255).astype(np.uint8)
            Image.fromarray(px, mode).save(d / f"{i}.png")
    return root


def csv_manifest(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] | None = ("path", "label"),
                 encoding: str = "utf-8") -> Path:  # fmt: skip
    """A CSV manifest from rows of strings (paths relative to the CSV)."""
    lines = ([",".join(header)] if header else []) + [",".join(r) for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte:
    the network that hangs a download without a timeout. Use as a context manager;
    ``url`` is its address as an HTTP proxy."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []  # kept open: a closed socket would be an answer
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
        for c in self.held:
            c.close()

    def env(self, home: Path) -> dict[str, str]:
        """A ``reslab`` environment whose every download goes through this server, with
        empty caches under ``home`` and short download bounds (where reslab reads them)."""
        env = cli_env(RESLAB_DOWNLOAD_TIMEOUT="2", RESLAB_DOWNLOAD_ATTEMPTS="2",
                      RESLAB_DATA_DIR=str(home / "data"), RESLAB_CACHE_DIR=str(home / "cache"),
                      TORCH_HOME=str(home / "torch"), HF_HOME=str(home / "hf"))  # fmt: skip
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            env[var] = self.url
        for var in ("no_proxy", "NO_PROXY", "RESLAB_OFFLINE", "HF_HUB_OFFLINE"):
            env.pop(var, None)
        return env
