"""``reslab lr-find``: sweep the learning rate, plot loss against it, suggest one.

    reslab lr-find --data fashion-mnist --model resnet20 --out runs/lrfind
    reslab lr-find --config fmnist_resnet20 --steps 200 optim.name=adamw
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reslab.cli.options import PRECISIONS, add_json, stdout_for_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DATA", help="image folder, CSV manifest or built-in dataset")
    p.add_argument("--model", metavar="NAME", help="architecture, e.g. resnet20")
    p.add_argument("--config", metavar="YAML", help="recipe (optimizer, batch size, precision...)")
    p.add_argument("--out", metavar="DIR", default="runs/lr_find", help="where lr_find.png/.json go")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--device")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--seed", type=int)
    p.add_argument("--start-lr", type=float, default=1e-6, dest="start_lr")
    p.add_argument("--end-lr", type=float, default=10.0, dest="end_lr")
    p.add_argument("--steps", type=int, default=100, help="batches in the sweep (default 100)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.name=adamw")  # fmt: skip
    add_json(p, "the sweep and the suggestion")
    # key=value overrides may sit before, between or after the flags
    p.parse_args = p.parse_intermixed_args  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from reslab.config import load_config, parse_overrides
    from reslab.engine.lr_finder import lr_find
    from reslab.errors import ConfigError

    from ..files import write_json

    flags = {"data.source": args.data, "model.name": args.model, "data.batch_size": args.batch_size,
             "device": args.device, "precision": args.precision, "seed": args.seed}  # fmt: skip
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(parse_overrides(args.overrides or []))
    cfg = load_config(args.config, overrides)
    if not cfg.data.source:
        raise ConfigError("lr-find needs data: pass --data (e.g. --data fashion-mnist) or a "
                          "--config recipe.")  # fmt: skip
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out} cannot be created ({e.strerror}); choose another folder.") from None
    with stdout_for_json(args.json):
        res = lr_find(cfg, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps)
    png = res.plot(out / "lr_find.png")
    write_json(out / "lr_find.json", res.to_dict())
    if args.json:
        import json

        print(json.dumps({**res.to_dict(), "plot": str(png)}, indent=2, default=str))
        return 0 if res.suggestion is not None else 1
    if res.suggestion is None:
        print(f"the loss did not fall over the sweep; look at {png} and try a wider "
              "--start-lr/--end-lr.")  # fmt: skip
        return 1
    print(f"suggested lr: {res.suggestion:.3g} (steepest descent {res.steepest or float('nan'):.3g}, "
          f"min/10 {res.min_div10:.3g}); plot: {png}")  # fmt: skip
    print(f"train with it: reslab train ... --lr {res.suggestion:.3g}")
    return 0
