"""``reslab embed``: the features of one layer for every image in a folder, as .npy or .parquet."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="run folder or checkpoint file whose model embeds the images")
    p.add_argument("--data", required=True, metavar="FOLDER",
                   help="folder of images (searched recursively) or one image")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="feats.npy (+ feats.json with the paths) or feats.parquet")
    p.add_argument("--layer", default="pool",
                   help="pool (default: what the classifier sees), a stage (layer1.., "
                        "global-average-pooled) or logits")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def run(args) -> int:
    import sys
    import time
    from pathlib import Path

    from reslab.device import resolve_device
    from reslab.errors import ConfigError
    from reslab.evaluate import load_run
    from reslab.evaluate.embed import check_layer, embed_images, list_images, write_index

    log = lambda *a: print(*a, file=sys.stderr)  # noqa: E731 - stdout stays machine-readable
    if Path(args.out).suffix not in (".npy", ".parquet"):  # before loading anything
        raise ConfigError(f"--out {args.out!r}: use a .npy or .parquet file name.")
    loaded = load_run(args.checkpoint, resolve_device(args.device))
    check_layer(loaded.model, args.layer)
    paths = list_images(args.data)
    start = time.perf_counter()
    emb, done, skipped = embed_images(loaded.model, paths, loaded.preprocess, args.layer,
                                      args.batch_size)
    for path, why in skipped:
        log(f"skipped {path}: {why}")
    meta = {"checkpoint": str(Path(args.checkpoint).resolve()), "layer": args.layer,
            "data": str(args.data)}
    out = write_index(args.out, emb, done, meta)
    log(f"embedded {len(done)} image(s) ({len(skipped)} skipped) into {emb.shape[1]} features "
        f"of {args.layer!r} in {time.perf_counter() - start:.1f} s; wrote {out}")
    return 0
