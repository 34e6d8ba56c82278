"""The flags every verb spells the same way: --checkpoint, --data, --out, --batch-size, --seed,
--device, --precision and --json, each with one help text and one set of choices.

A verb that cannot honour one precision refuses it with the reason (``refuse_precision``)
instead of offering its own list, so ``--precision`` means the same thing everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from reslab.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, unless the help text already states it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def add_checkpoint(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--checkpoint", required=required, metavar="CKPT",
                   help="a run folder (uses its best checkpoint) or a checkpoint file")  # fmt: skip


def add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument("--device", default=default, help=DEVICE_HELP)


def add_precision(p: argparse.ArgumentParser, default: str | None = "auto", help: str = "") -> None:
    """``--precision`` with the one set of choices (auto, fp32, bf16, fp16)."""
    p.add_argument("--precision", default=default, choices=PRECISIONS,
                   help=help or "number format of the forward pass; auto: bf16 where the "
                                "hardware has it natively")  # fmt: skip


def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as JSON on stdout (messages go to stderr)")  # fmt: skip


def refuse_precision(verb: str, precision: str | None, refused: dict[str, str]) -> None:
    """Raises ConfigError when ``precision`` is one this verb cannot run, with the reason.

    Args:
        verb: the command, for the message (``reslab export``).
        precision: the value given.
        refused: precision -> why this verb cannot do it.
    """
    if precision in refused:
        usable = [p for p in PRECISIONS if p not in refused]
        raise ConfigError(f"{verb} --precision {precision}: {refused[precision]}; use one of "
                          f"{', '.join(usable)}.")  # fmt: skip


def check_output(path: str | os.PathLike, kind: str, flag: str = "--out") -> Path:
    """Refuses an output path that cannot be written, before any work starts.

    Args:
        path: where the verb will write.
        kind: ``"dir"`` (a folder, created with its parents) or ``"file"`` (its parent
            folders are created).
        flag: the option's name, for the message.
    Returns:
        ``path`` as a Path.
    Raises:
        ConfigError saying what is in the way and what to pass instead.
    """
    path = Path(path)
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file; pass a folder (it is created if missing).")
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder where a file is to be written; pass a "
                          "file name, or move that folder away.")  # fmt: skip
    existing = path if path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, so nothing can be created "
                          "under it; choose another place.")  # fmt: skip
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable by this user; choose a "
                          "folder you may write to.")  # fmt: skip
    return path


@contextlib.contextmanager
def stdout_for_json(enabled: bool):
    """With ``--json``, whatever the work prints goes to stderr, so stdout carries only the
    JSON document printed after this block."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield
