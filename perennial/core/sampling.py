"""Bounded uniform samples of rows that arrive chunk by chunk (data larger than memory)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

import numpy as np
import pandas as pd


def sample_rows(chunks: Iterable[pd.DataFrame], n: int, seed: int) -> pd.DataFrame:
    """A uniform sample of at most n rows of all the chunks, holding no more than n rows plus one chunk.

    Every row draws a random key and the n smallest keys are kept (bottom-k sampling), so each
    subset of n rows is equally likely whatever the chunk sizes.
    """
    rng = np.random.default_rng(seed)
    kept, keys = None, np.empty(0)
    for chunk in chunks:
        chunk_keys = rng.random(len(chunk))
        if kept is not None and len(kept) >= n:
            # Only rows that beat the largest kept key can enter.
            enter = chunk_keys < keys.max()
            chunk, chunk_keys = chunk[enter], chunk_keys[enter]
        merged = chunk if kept is None else pd.concat([kept, chunk], ignore_index=True)
        keys = np.concatenate([keys, chunk_keys])
        if len(merged) > n:
            best = np.argpartition(keys, n - 1)[:n]
            merged, keys = merged.iloc[best], keys[best]
        kept = merged.reset_index(drop=True)
    return kept if kept is not None else pd.DataFrame()


def batch_seed(batch_id: str) -> int:
    """A seed of its own for each batch: the same batch always samples the same rows."""
    return zlib.crc32(batch_id.encode())


def uniform_mask(length: int, n: int, seed: int) -> np.ndarray:
    """Which of `length` rows a uniform draw of at most n without replacement takes."""
    if length <= n:
        return np.ones(length, dtype=bool)
    chosen = np.zeros(length, dtype=bool)
    chosen[np.random.default_rng(seed).choice(length, size=n, replace=False)] = True
    return chosen


def uniform_rows(frame: pd.DataFrame, n: int, seed: int, keep: np.ndarray | None = None) -> pd.DataFrame:
    """At most n rows drawn uniformly without replacement, plus the rows `keep` marks; in frame order."""
    if len(frame) <= n:
        return frame
    chosen = uniform_mask(len(frame), n, seed)
    if keep is not None:
        chosen |= keep
    return frame[chosen]


def history_quotas(sizes: list[int], budget: int) -> list[int]:
    """Rows to take from each earlier batch (`sizes`, oldest first) so that all of them fit `budget`:
    the newest in full while they fit half of it, then the older ones share what is left in
    proportion to their sizes (newest rows favoured; every older row equally likely)."""
    if sum(sizes) <= budget:
        return list(sizes)
    quotas, used, newest = [0] * len(sizes), 0, len(sizes)
    for i in reversed(range(len(sizes))):
        if used + sizes[i] > budget // 2:
            break
        quotas[i], used, newest = sizes[i], used + sizes[i], i
    older = sum(sizes[:newest])
    for i in range(newest):
        quotas[i] = min(sizes[i], (budget - used) * sizes[i] // older)
    return quotas


def sampling_error(n: int, confidence: float = 0.999) -> float:
    """Largest gap between a uniform sample of n rows and the whole batch, at `confidence`.

    Holds for the share of rows meeting any condition (Hoeffding) and, at every value at once, for
    the empirical CDF (Dvoretzky-Kiefer-Wolfowitz, Massart's constant): sqrt(ln(2 / alpha) / 2n).
    """
    return math.sqrt(math.log(2 / (1 - confidence)) / (2 * n))
