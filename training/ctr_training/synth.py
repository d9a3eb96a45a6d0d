"""Generate Criteo-format click logs with a learnable signal, for demos and scale tests.

The rows follow the real layout (label, 13 integer and 26 hashed categorical
fields, empty fields for missing values) with a known structure: integer
features are log-normal counts, categorical values are Zipf-distributed over
vocabularies from tens to about a million values, and the click probability
depends on a few integer features and per-value effects of some categorical
features, with about 25% positives.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Vocabulary size of each categorical column C1..C26, tens to about a million.
CARDINALITIES = [1400, 550, 1_000_000, 300_000, 300, 24, 12_000, 630, 3, 90_000,
                 5_600, 800_000, 3_200, 27, 15_000, 500_000, 10, 5_600, 2_200, 4,
                 700_000, 18, 15, 140_000, 100, 90_000]
INTEGER_MISSING = [0.45, 0.0, 0.2, 0.2, 0.03, 0.2, 0.04, 0.0, 0.04, 0.45, 0.04, 0.75, 0.2]
CATEGORICAL_MISSING = [0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0,
                       0.0, 0.0, 0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44]
# Categorical columns whose values change the click probability.
INFORMATIVE = (0, 1, 4, 5, 8, 13, 16, 19, 22)


def _hex_tokens(indices: np.ndarray, column: int) -> np.ndarray:
    """Map value indices to 8-hex-character tokens, distinct per column, as Criteo hashes look."""
    unique, inverse = np.unique(indices, return_inverse=True)
    mixed = (unique.astype(np.uint64) * np.uint64(2654435761) + np.uint64(column * 40503 + 17)) & np.uint64(0xFFFFFFFF)
    return np.array([f"{value:08x}" for value in mixed.tolist()])[inverse]


# Seed of the click model itself (which values click more), fixed so that
# training and scoring files drawn with different seeds share one ground truth.
WORLD_SEED = 20261204


def generate(rows: int, seed: int = 7) -> list[np.ndarray]:
    """Return the 40 columns of ``rows`` synthetic log lines as string arrays ('' = missing)."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(WORLD_SEED)
    logit = np.full(rows, -1.6)
    columns: list[np.ndarray] = []

    integers = []
    for i, missing in enumerate(INTEGER_MISSING):
        values = np.floor(rng.lognormal(mean=1.0 + 0.3 * i, sigma=1.2, size=rows)).astype(np.int64)
        if i == 1:
            values -= 2  # I2 goes down to -2 in the real logs.
        if i in (0, 2, 6, 10):
            logit += 0.35 * (np.log1p(np.maximum(values, 0)) - 1.5) * (1 if i % 4 == 0 else -1)
        present = rng.random(rows) >= missing
        integers.append(np.where(present, values.astype(str), ""))

    categoricals = []
    for c, (cardinality, missing) in enumerate(zip(CARDINALITIES, CATEGORICAL_MISSING)):
        indices = np.minimum(rng.zipf(1.15 + 0.02 * (c % 5), size=rows) - 1, cardinality - 1)
        if c in INFORMATIVE:
            effects = world.normal(0.0, 0.6, size=min(cardinality, 5000))
            logit += np.where(indices < len(effects), effects[np.minimum(indices, len(effects) - 1)], 0.0)
        present = rng.random(rows) >= missing
        categoricals.append(np.where(present, _hex_tokens(indices, c), ""))

    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8).astype(str)
    columns = [labels, *integers, *categoricals]
    return columns


def write_logs(path: Path, rows: int, seed: int = 7, chunk: int = 200_000) -> Path:
    """Write ``rows`` synthetic lines to ``path`` (gzip when it ends in ``.gz``), in chunks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as out:
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            columns = generate(count, seed=seed + start)
            out.writelines("\t".join(fields) + "\n" for fields in zip(*(c.tolist() for c in columns)))
            logger.info("generated %d of %d log lines", start + count, rows)
    return path
