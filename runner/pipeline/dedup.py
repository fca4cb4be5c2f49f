"""Dedup of generated questions: exact (after normalizing case, spaces and punctuation) and near.

Near duplicates by default with MinHash LSH over word 3-shingles (datasketch; no model, nothing
extra to run), or, given an OpenAI-compatible `/v1/embeddings` endpoint (vLLM, llama.cpp, OpenAI),
by embedding cosine. The first of each group is kept (input order), the others are reported with
the task they duplicate.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from datasketch import MinHash, MinHashLSH
from openai import AsyncOpenAI, OpenAIError
from pydantic import BaseModel, Field

from simgate.runner.errors import RunnerError
from simgate.simulators.fidelity.embedding import cosine

_NON_WORD = re.compile(r"[^\w]+")
NUM_PERM = 128


class DedupResult(BaseModel):
    kept: list[dict[str, Any]]
    exact: dict[str, str] = Field(default_factory=dict, description="dropped id → the id it repeats")
    near: dict[str, str] = Field(default_factory=dict, description="dropped id → the id it is near")
    method: str


def normalized(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


def shingles(text: str, size: int = 3) -> set[str]:
    words = normalized(text).split()
    if len(words) < size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def minhash(text: str) -> MinHash:
    signature = MinHash(num_perm=NUM_PERM, seed=1)
    for shingle in shingles(text):
        signature.update(shingle.encode("utf-8"))
    return signature


def _exact(tasks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    first: dict[str, str] = {}
    kept, dropped = [], {}
    for task in tasks:
        key = normalized(str(task["question"]))
        if key in first:
            dropped[str(task["id"])] = first[key]
        else:
            first[key] = str(task["id"])
            kept.append(task)
    return kept, dropped


def dedup_minhash(tasks: list[dict[str, Any]], threshold: float = 0.7) -> DedupResult:
    """Near duplicates: estimated Jaccard similarity of word 3-shingles ≥ threshold."""
    if not 0 < threshold <= 1:
        raise RunnerError(f"the near-duplicate threshold must be in (0, 1], got {threshold}")
    unique, exact = _exact(tasks)
    # LSH finds candidates (its banding cannot be tuned above ~0.9); the estimate against the threshold decides.
    lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=NUM_PERM)
    signatures: dict[str, MinHash] = {}
    kept, near = [], {}
    for task in unique:
        signature = minhash(str(task["question"]))
        matches = sorted(key for key in lsh.query(signature) if signatures[key].jaccard(signature) >= threshold)
        if matches:
            near[str(task["id"])] = matches[0]
            continue
        lsh.insert(str(task["id"]), signature)
        signatures[str(task["id"])] = signature
        kept.append(task)
    return DedupResult(kept=kept, exact=exact, near=near, method=f"minhash-lsh jaccard>={threshold}")


async def dedup_embeddings(tasks: list[dict[str, Any]], base_url: str, model: str, threshold: float = 0.9,
                           api_key: str = "not-needed", batch: int = 64) -> DedupResult:
    """Near duplicates: embedding cosine ≥ threshold against every kept question."""
    unique, exact = _exact(tasks)
    client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=1)
    vectors: list[list[float]] = []
    try:
        for start in range(0, len(unique), batch):
            answer = await client.embeddings.create(model=model, input=[str(t["question"]) for t in
                                                                        unique[start:start + batch]])
            vectors += [list(item.embedding) for item in sorted(answer.data, key=lambda item: item.index)]
    except OpenAIError as exc:
        raise RunnerError(f"the embeddings endpoint {base_url} failed: {type(exc).__name__}: {exc}") from None
    kept: list[dict[str, Any]] = []
    kept_vectors: list[list[float]] = []
    near: dict[str, str] = {}
    for task, vector in zip(unique, vectors, strict=True):
        best = max(range(len(kept)), key=lambda i: cosine(vector, kept_vectors[i]), default=None)
        if best is not None and cosine(vector, kept_vectors[best]) >= threshold:
            near[str(task["id"])] = str(kept[best]["id"])
            continue
        kept.append(task)
        kept_vectors.append(vector)
    return DedupResult(kept=kept, exact=exact, near=near, method=f"embeddings {model} cosine>={threshold}")
