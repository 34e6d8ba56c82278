"""``reslab summary MODEL``: a per-layer table (name, type, output shape, params, MACs) and totals.

Shapes and counts come from one forward pass of one image (``reslab.cli.models.counting_model``:
the meta device for the ImageNet family, so no time goes into random init), so they are exact.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reslab.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="architecture name (see `reslab models`)")
    parser.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                        help="input size (default: the model's, e.g. 3 224 224)")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    parser.add_argument("--in-chans", type=int,
                        help="input channels (default: C of --input-size, else 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def summarize(
    name: str,
    input_size: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
) -> dict[str, Any]:
    """Per-layer statistics of ``create_model(name, ...)`` for one image.

    Args:
        name: a registered architecture.
        input_size: (C, H, W); default: the architecture's, with C = ``in_chans``.
        num_classes: classifier size (default: the architecture's).
        in_chans: input channels; must equal C when both are given.
    Returns:
        ``{"model", "input_size", "num_classes", "layers": [{name, type, output_shape,
        params, macs}], "params", "trainable_params", "macs"}``.
    Raises:
        ConfigError: unknown model, non-positive sizes, or ``in_chans`` that contradicts C.
    """
    from reslab.cli.models import counting_model, single_thread
    from reslab.models import count_params, get_spec, profile_model

    spec = get_spec(name)
    if input_size is not None:
        input_size = tuple(int(v) for v in input_size)
        if len(input_size) != 3 or min(input_size) < 1:
            raise ConfigError(f"--input-size must be three positive numbers C H W, received "
                              f"{list(input_size)}.")
        if in_chans is not None and in_chans != input_size[0]:
            raise ConfigError(f"--in-chans {in_chans} contradicts --input-size "
                              f"{' '.join(map(str, input_size))} (C={input_size[0]}); give one.")
        in_chans = input_size[0]
    in_chans = 3 if in_chans is None else in_chans
    if in_chans < 1:
        raise ConfigError(f"--in-chans must be >= 1, received {in_chans}.")
    if num_classes is not None and num_classes < 0:
        raise ConfigError(f"--num-classes must be >= 0, received {num_classes}.")
    size = input_size or (in_chans,) + tuple(spec.input_size[1:])
    try:
        with single_thread():
            model = counting_model(name, num_classes=num_classes, in_chans=in_chans)
            stats = profile_model(model, size)
    except RuntimeError as e:  # e.g. an input smaller than a kernel
        raise ConfigError(f"{name} cannot run on input {list(size)}: {e}") from e
    return {
        "model": name,
        "input_size": list(size),
        "num_classes": model.num_classes,
        "layers": [
            {"name": s.name, "type": s.kind, "output_shape": list(s.output_shape),
             "params": s.params, "macs": s.macs}
            for s in stats
        ],
        "params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "macs": sum(s.macs for s in stats),
    }


def run(args: argparse.Namespace) -> int:
    from reslab.cli.models import print_table

    info = summarize(args.model, args.input_size, args.num_classes, args.in_chans)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print_table(
        ["layer", "type", "output shape", "params", "MACs"],
        [
            (l["name"], l["type"], "x".join(map(str, l["output_shape"])),
             f"{l['params']:,}" if l["params"] else "-", f"{l['macs']:,}" if l["macs"] else "-")
            for l in info["layers"]
        ],
        title=f"{info['model']} on input {'x'.join(map(str, info['input_size']))}",
        right=("params", "MACs"),
    )
    print(f"total params: {info['params']:,} (trainable {info['trainable_params']:,})")
    print(f"total MACs:   {info['macs']:,} ({info['macs'] / 1e9:.3f} G) per image")
    return 0
