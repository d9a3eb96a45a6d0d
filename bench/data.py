"""Generated Criteo-shaped click data, seeded, for the benchmark's reference models.

The shape follows the Criteo display-ads logs: 13 integer count features
(heavy-tailed, some negative, each with its own missing rate) and 26
categorical features whose values follow a Zipf distribution, with
cardinalities spread log-uniformly from tens to about a million. The label is
drawn from a logistic model of the features, with the intercept tuned so that
about 25% of rows are positive.

Categorical features are produced in two encodings:

- frequency: the value's count in the training rows (0 for values seen fewer
  than ``MIN_COUNT`` times or never, NaN for missing), as the feature job
  encodes them;
- native: the value's integer code, for LightGBM's ``categorical_feature``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_INTEGER = 13
NUM_CATEGORICAL = 26
# Counts below this become 0, the code for "rare or unseen".
MIN_COUNT = 5
TARGET_POSITIVE_RATE = 0.25

INTEGER_NAMES = [f"i{k}" for k in range(1, NUM_INTEGER + 1)]
CATEGORICAL_NAMES = [f"c{k}" for k in range(1, NUM_CATEGORICAL + 1)]
FEATURE_NAMES = INTEGER_NAMES + CATEGORICAL_NAMES


@dataclass(frozen=True)
class Shape:
    """Parameters of the generator that do not change between draws."""

    cardinalities: np.ndarray
    zipf_exponents: np.ndarray
    categorical_missing: np.ndarray
    integer_mu: np.ndarray
    integer_sigma: np.ndarray
    integer_missing: np.ndarray
    integer_weights: np.ndarray
    category_effect_scale: np.ndarray


@dataclass
class Draw:
    """Rows drawn from the generator: raw integer features, category codes and labels."""

    integers: np.ndarray  # float64, NaN = missing
    codes: np.ndarray  # int64 category codes, -1 = missing
    labels: np.ndarray  # int8


def make_shape(seed: int) -> Shape:
    """Fix cardinalities, Zipf exponents, missing rates and effect sizes from ``seed``."""
    rng = np.random.default_rng(seed)
    cardinalities = np.round(np.geomspace(20, 1_000_000, NUM_CATEGORICAL)).astype(np.int64)
    rng.shuffle(cardinalities)
    return Shape(
        cardinalities=cardinalities,
        zipf_exponents=rng.uniform(1.05, 1.4, NUM_CATEGORICAL),
        categorical_missing=np.where(rng.random(NUM_CATEGORICAL) < 0.3,
                                     rng.uniform(0.05, 0.45, NUM_CATEGORICAL), 0.0),
        integer_mu=rng.uniform(0.0, 4.0, NUM_INTEGER),
        integer_sigma=rng.uniform(0.5, 2.0, NUM_INTEGER),
        integer_missing=rng.uniform(0.0, 0.45, NUM_INTEGER),
        integer_weights=rng.normal(0.0, 0.35, NUM_INTEGER),
        category_effect_scale=rng.uniform(0.1, 0.8, NUM_CATEGORICAL),
    )


def _zipf_codes(rng: np.random.Generator, cardinality: int, exponent: float, size: int) -> np.ndarray:
    # Inverse-CDF sampling over a finite support; code 0 is the most frequent value.
    weights = 1.0 / np.arange(1, cardinality + 1, dtype=np.float64) ** exponent
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, rng.random(size)), cardinality - 1)


def _category_effects(shape: Shape, column: int, seed: int) -> np.ndarray:
    # One fixed effect per category code, the same for every draw of a seed.
    rng = np.random.default_rng([seed, 7919, column])
    return rng.normal(0.0, shape.category_effect_scale[column], int(shape.cardinalities[column]))


def draw(shape: Shape, rows: int, seed: int, shape_seed: int) -> Draw:
    """Draw ``rows`` rows; ``shape_seed`` fixes the category effects shared by all draws."""
    rng = np.random.default_rng(seed)

    integers = np.floor(rng.lognormal(shape.integer_mu, shape.integer_sigma, (rows, NUM_INTEGER)))
    # Criteo's second integer feature takes small negative values too.
    integers[:, 1] -= 3.0
    logit = (np.log1p(np.maximum(integers, 0.0)) - shape.integer_mu) @ shape.integer_weights
    integers[rng.random((rows, NUM_INTEGER)) < shape.integer_missing] = np.nan

    codes = np.empty((rows, NUM_CATEGORICAL), dtype=np.int64)
    for column in range(NUM_CATEGORICAL):
        codes[:, column] = _zipf_codes(rng, int(shape.cardinalities[column]),
                                       float(shape.zipf_exponents[column]), rows)
        logit += _category_effects(shape, column, shape_seed)[codes[:, column]]
        missing = rng.random(rows) < shape.categorical_missing[column]
        codes[missing, column] = -1

    intercept = _intercept_for_rate(logit, TARGET_POSITIVE_RATE)
    probability = 1.0 / (1.0 + np.exp(-(logit + intercept)))
    labels = (rng.random(rows) < probability).astype(np.int8)
    return Draw(integers=integers, codes=codes, labels=labels)


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + middle)))) < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def category_counts(codes: np.ndarray) -> list[np.ndarray]:
    """Count each category code per column in training rows (the frequency-encoding table)."""
    counts = []
    for column in range(codes.shape[1]):
        present = codes[:, column][codes[:, column] >= 0]
        counts.append(np.bincount(present).astype(np.float64))
    return counts


def frequency_matrix(sample: Draw, counts: list[np.ndarray]) -> np.ndarray:
    """Build the float64 matrix with categoricals replaced by their training counts."""
    rows = sample.codes.shape[0]
    matrix = np.empty((rows, NUM_INTEGER + NUM_CATEGORICAL), dtype=np.float64)
    matrix[:, :NUM_INTEGER] = sample.integers
    for column, table in enumerate(counts):
        codes = sample.codes[:, column]
        known = (codes >= 0) & (codes < table.size)
        values = np.zeros(rows, dtype=np.float64)
        values[known] = table[codes[known]]
        values[values < MIN_COUNT] = 0.0
        values[codes < 0] = np.nan
        matrix[:, NUM_INTEGER + column] = values
    return matrix


def native_matrix(sample: Draw) -> np.ndarray:
    """Build the float64 matrix with categoricals as integer codes (NaN for missing)."""
    matrix = np.empty((sample.codes.shape[0], NUM_INTEGER + NUM_CATEGORICAL), dtype=np.float64)
    matrix[:, :NUM_INTEGER] = sample.integers
    codes = sample.codes.astype(np.float64)
    codes[sample.codes < 0] = np.nan
    matrix[:, NUM_INTEGER:] = codes
    return matrix
