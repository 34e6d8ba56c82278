"""``reslab push``: upload an export folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER",
                   help="a folder written by `reslab export --format hf` (or timm, onnx)")
    p.add_argument("--repo", required=True, help="the Hub repository, user/name or org/name")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", default=None,
                   help="Hub token (default: HF_TOKEN or the one from `hf auth login`)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--dry-run", action="store_true",
                   help="list the files that would be uploaded and stop")


def run(args: argparse.Namespace) -> int:
    from ..export.hf import files_to_upload, push_folder

    files = files_to_upload(args.folder)
    if args.dry_run:
        print(f"would upload {len(files)} files from {args.folder} to {args.repo}:")
        for f in files:
            print(f"  {f}")
        return 0
    url = push_folder(args.folder, args.repo, token=args.token, private=args.private,
                      message=args.message)
    print(f"uploaded {len(files)} files to {args.repo}: {url}")
    return 0
