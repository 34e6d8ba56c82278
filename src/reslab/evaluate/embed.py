"""Embeddings: the features of one layer for a folder of images, nearest neighbours by cosine
similarity, and near-duplicates (resized or re-encoded copies that exact hashes miss).

    emb, paths, skipped = embed_images(model, list_images("photos/"), preprocess, layer="pool")
    write_index("feats.npy", emb, paths, {"checkpoint": "runs/ft", "layer": "pool"})
    idx, sims = nearest(emb[:1], emb, k=5)                      # (1, 5) each
    pairs = near_duplicates(emb, paths, threshold=0.98)         # [(a, b, similarity), ...]

An index is ``feats.npy`` (float32 (N, D)) with ``feats.json`` next to it (paths, layer,
checkpoint), or one ``feats.parquet`` (columns ``path`` and ``embedding``, the same
metadata in the file's key-value metadata).

``near_duplicates`` lives in ``reslab.data.near_duplicates`` (``reslab check`` uses it
there, below this layer) and is re-exported here, where docs/backbones.md documents it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data.images import is_image_file, load_image
from ..data.near_duplicates import near_duplicates, normalize_rows  # noqa: F401
from ..data.transforms import eval_transform
from ..errors import ConfigError, DataError

log = logging.getLogger("reslab.evaluate.embed")

POOLED = "pool"  # the pooled features the classifier sees (forward_head(pre_logits=True))
LOGITS = "logits"


def layer_names(model: nn.Module) -> list[str]:
    """Layers ``embed_images`` accepts: every stage (pooled), ``pool`` and ``logits``."""
    return list(getattr(model, "stage_names", [])) + [POOLED, LOGITS]


def check_layer(model: nn.Module, layer: str) -> None:
    """Raises ConfigError before any image is read when ``layer`` is not one of the model's."""
    names = layer_names(model)
    if layer not in names:
        raise ConfigError(f"--layer {layer!r} is not a layer of this model; choose one of "
                          f"{', '.join(names)} (stages are global-average-pooled).")


@torch.no_grad()
def embed_batch(model: nn.Module, x: torch.Tensor, layer: str = POOLED) -> torch.Tensor:
    """(B, C, H, W) normalised images -> (B, D) features of ``layer``.

    Stage outputs are global-average-pooled (B, C, h, w) -> (B, C), so every layer gives
    one vector per image whatever the image size.
    """
    if layer == LOGITS:
        return model(x)
    if layer == POOLED:
        return model.forward_head(model.forward_features(x), pre_logits=True)
    stages = model.forward_stages(x)
    return stages[list(model.stage_names).index(layer)].mean(dim=(2, 3))


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` (recursive), sorted so an index is reproducible."""
    root = Path(folder)
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise DataError(f"{str(folder)!r} is neither an image nor a folder; give a folder of "
                        "images (sub-folders are searched too).")
    found = sorted(str(p) for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not found:
        raise DataError(f"no image files under {str(folder)!r} (looked for .jpg, .png, ...).")
    return found


def embed_images(
    model: nn.Module,
    paths: Sequence[str],
    preprocess: dict,
    layer: str = POOLED,
    batch_size: int = 64,
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Features of ``layer`` for every readable image.

    Args:
        model: a reslab model (``forward_stages`` / ``forward_features`` / ``forward_head``).
        paths: image files.
        preprocess: the model's evaluation preprocessing (``LoadedRun.preprocess``).
        layer: a name from ``layer_names(model)``.
        batch_size: images per forward pass.
    Returns:
        (embeddings float32 (N, D), the N paths embedded, [(path, reason)] skipped).
    """
    check_layer(model, layer)
    model.eval()
    device = next(model.parameters()).device
    transform = eval_transform(preprocess)
    in_chans = preprocess["input_size"][0]
    chunks, done, skipped = [], [], []
    for start in range(0, len(paths), batch_size):
        batch, names = [], []
        for path in paths[start:start + batch_size]:
            try:
                batch.append(transform(load_image(path, in_chans)))
                names.append(str(path))
            except (DataError, OSError) as e:  # one unreadable file must not stop the index
                skipped.append((str(path), str(e)))
        if batch:
            feats = embed_batch(model, torch.stack(batch).to(device), layer)
            chunks.append(feats.float().cpu().numpy())
            done.extend(names)
    if not chunks:
        raise DataError(f"none of the {len(paths)} file(s) could be read as an image; "
                        f"first problem: {skipped[0][1] if skipped else 'no files'}")
    return np.concatenate(chunks).astype(np.float32), done, skipped


def nearest(query: np.ndarray, index: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``index`` most cosine-similar to each query row.

    Args:
        query: (Q, D) or (D,) embeddings.
        index: (N, D) embeddings.
        k: neighbours per query (at most N).
    Returns:
        (indices int64 (Q, k), similarities float32 (Q, k)), most similar first.
    """
    q = normalize_rows(np.atleast_2d(query))
    x = normalize_rows(index)
    if q.shape[1] != x.shape[1]:
        raise ConfigError(f"the query has {q.shape[1]} features but the index {x.shape[1]}; "
                          "embed the query with the same checkpoint and --layer as the index.")
    sims = q @ x.T  # (Q, N)
    k = min(k, x.shape[0])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


# ----------------------------------------------------------------------------- index files
def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def write_index(out: str | os.PathLike, embeddings: np.ndarray, paths: Sequence[str],
                meta: dict | None = None) -> Path:
    """Writes ``out`` as .npy (+ a .json sidecar with paths and ``meta``) or as .parquet.

    Returns:
        The path of the embeddings file.
    """
    out = Path(out)
    meta = {**(meta or {}), "paths": [str(p) for p in paths], "dim": int(embeddings.shape[1])}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, np.asarray(embeddings, dtype=np.float32))
        _sidecar(out).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    elif out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"path": meta.pop("paths"),
                          "embedding": list(np.asarray(embeddings, dtype=np.float32))})
        table = table.replace_schema_metadata({"reslab": json.dumps(meta)})
        pq.write_table(table, out)
    else:
        raise ConfigError(f"--out {str(out)!r}: use a .npy or .parquet file name.")
    return out


def read_index(path: str | os.PathLike) -> tuple[np.ndarray, list[str], dict]:
    """Reads an index written by ``write_index``: (embeddings (N, D), paths, metadata)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"index {str(path)!r} does not exist; create it with "
                        "`reslab embed --checkpoint RUN --data FOLDER --out feats.npy`.")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"reslab", b"{}"))
        emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        return emb, [str(p) for p in table.column("path").to_pylist()], meta
    if path.suffix != ".npy":
        raise ConfigError(f"index {str(path)!r}: expected a .npy or .parquet file.")
    side = _sidecar(path)
    if not side.exists():
        raise DataError(f"{side} (the paths of {path.name}) is missing; `reslab embed` writes "
                        "both files: keep them together.")
    meta = json.loads(side.read_text(encoding="utf-8"))
    emb = np.load(path, allow_pickle=False)  # never unpickle a file from elsewhere
    paths = meta.pop("paths")
    if len(paths) != len(emb):
        raise DataError(f"{path} holds {len(emb)} embeddings but {side} lists {len(paths)} paths.")
    return emb, paths, meta
