"""``reslab similar``: the images of an index most like a query image (cosine similarity)."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="the query image")
    p.add_argument("--index", required=True, metavar="FILE",
                   help="feats.npy or feats.parquet written by `reslab embed`")
    p.add_argument("--checkpoint", metavar="RUN",
                   help="model that embeds the query (default: the one that built the index)")
    p.add_argument("-k", "--top-k", dest="k", type=int, default=5, help="neighbours (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def run(args) -> int:
    import json

    from reslab.device import resolve_device
    from reslab.errors import ConfigError
    from reslab.evaluate import load_run
    from reslab.evaluate.embed import embed_images, nearest, read_index

    if args.k < 1:
        raise ConfigError(f"-k must be >= 1, received {args.k}.")
    emb, paths, meta = read_index(args.index)
    checkpoint = args.checkpoint or meta.get("checkpoint")
    if not checkpoint:
        raise ConfigError(f"{args.index} does not say which model built it; pass --checkpoint.")
    loaded = load_run(checkpoint, resolve_device(args.device))
    query, _, skipped = embed_images(loaded.model, [args.image], loaded.preprocess,
                                     meta.get("layer", "pool"))
    idx, sims = nearest(query, emb, args.k)
    hits = [{"path": paths[i], "similarity": round(float(s), 6)} for i, s in zip(idx[0], sims[0])]
    if args.json:
        print(json.dumps({"query": args.image, "neighbours": hits}, indent=2, ensure_ascii=False))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:3d}  {hit['similarity']:.4f}  {hit['path']}")
    return 0
