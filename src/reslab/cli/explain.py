"""``reslab explain``: Grad-CAM overlays showing where the model looked."""

from __future__ import annotations

from reslab.cli.options import add_checkpoint, add_device, add_json


def add_arguments(p) -> None:
    add_checkpoint(p)
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders or globs")
    p.add_argument("--layer",
                   help="layer to explain, e.g. layer3 or layer4.1 (default: the last stage)")
    p.add_argument("--class", dest="target", metavar="C",
                   help="explain this class (name or index) instead of the predicted one")
    p.add_argument("--out", metavar="DIR",
                   help="where the PNGs go (default: RUN/explain or ./explain)")
    add_device(p)
    add_json(p, "each image's prediction and overlay path")


def run(args) -> int:
    from pathlib import Path

    from reslab.evaluate import explain_images, load_run

    from ..device import resolve_device

    loaded = load_run(args.checkpoint, resolve_device(args.device))
    out = Path(args.out) if args.out else ((loaded.run_dir or Path(".")) / "explain")
    results = explain_images(loaded.model, args.images, loaded.preprocess, loaded.classes, out,
                             layer=args.layer, target_class=args.target)
    done = [r for r in results if r.error is None]
    if args.json:
        import json

        rows = [{"path": str(r.path), "predicted": r.predicted, "prob": r.prob, "true": r.true,
                 "png": str(r.png)} for r in done]  # fmt: skip
        skipped = [{"path": str(r.path), "error": str(r.error)} for r in results if r.error]
        print(json.dumps({"explained": rows, "skipped": skipped}, indent=2, ensure_ascii=False))
        return 0 if done else 1
    for r in done:
        mark = ""
        if r.true is not None:
            mark = "  ✓" if r.true == r.predicted else f"  ✗ true: {r.true}"
        print(f"{r.path}: {r.predicted} ({100 * r.prob:.1f}%){mark} -> {r.png}")
    for r in results:
        if r.error is not None:
            print(f"skipped {r.path}: {r.error}")
    print(f"{len(done)} overlay(s) in {out}/")
    return 0 if done else 1
