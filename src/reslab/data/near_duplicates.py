"""Near-duplicates from embeddings: pairs of images whose centred features point the same
way (cosine similarity), the copies that exact file hashes miss (resized, re-encoded).

    pairs = near_duplicates(emb, paths, threshold=0.98, groups=splits)  # [(a, b, sim), ...]

Pure NumPy on (N, D) embeddings: ``reslab check`` feeds it thumbnail features
(``data/thumbnail_features.py``), ``reslab.evaluate.embed`` any layer of any checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so a dot product is a cosine."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def near_duplicates(
    embeddings: np.ndarray,
    paths: Sequence[str],
    threshold: float = 0.98,
    groups: Sequence[str] | None = None,
    block: int = 2048,
) -> list[tuple[str, str, float]]:
    """Pairs of images whose embeddings have cosine similarity >= ``threshold``.

    The embeddings are centred first (the set's mean subtracted): after a ReLU every feature
    is positive, so raw cosines between unrelated images are already high; centred, only
    the content that differs from the set's average counts.

    Args:
        embeddings: (N, D), e.g. from ``embed_images`` or ``thumbnail_features``.
        paths: the N image paths.
        threshold: cosine similarity, -1..1; resized or JPEG re-encoded copies score ~0.98+.
        groups: optional N labels (e.g. the split of each image); when given, only pairs
            from different groups are reported (leakage across splits).
        block: rows compared at once (memory: block x N floats).
    Returns:
        [(path_a, path_b, similarity)] sorted by similarity, highest first; ``path_a``
        comes before ``path_b`` in ``paths``.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(paths):
        raise ConfigError(f"expected embeddings (N, D) for N={len(paths)} paths, "
                          f"received shape {tuple(emb.shape)}.")
    if groups is not None and len(groups) != len(paths):
        raise ConfigError(f"groups has {len(groups)} entries for {len(paths)} paths.")
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold={threshold!r} is a cosine similarity: use -1..1 (e.g. 0.98).")
    centred = emb - emb.mean(axis=0, keepdims=True) if len(emb) > 2 else emb
    x = normalize_rows(centred)
    pairs = []
    # Row blocks keep memory at block x N floats (a full N x N matrix is 10 GB at 50k images).
    for start in range(0, len(x), block):
        sims = x[start:start + block] @ x.T  # (block, N)
        rows, cols = np.nonzero(sims >= threshold)
        for r, j in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if j > i and (groups is None or groups[i] != groups[j]):
                pairs.append((str(paths[i]), str(paths[j]), float(sims[r, j])))
    return sorted(pairs, key=lambda p: -p[2])
