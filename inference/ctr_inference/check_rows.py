"""Check rows: the feature rows on which a compiled model must match LightGBM.

A compiled engine is trusted only where it was checked, so the rows cover the
cases where engines tend to differ from LightGBM:

- ``ordinary``: typical rows (a sample of real rows when the bake has one,
  else values drawn between the model's own split thresholds, 10% missing);
- ``missing``: every feature missing, every numeric or every categorical
  feature missing, and each feature missing alone;
- ``threshold``, ``above``, ``below``: every numeric split threshold of the
  model exactly, and the next float64 above and below it;
- ``categorical``: frequency-encoded categorical features at 0 (unseen or
  rare) and at negative values. Native categorical features at codes the
  model never saw, at negative codes and at a code near 2**31.

The rows are stored in the bundle as ``check_rows.parquet`` with LightGBM's
predictions at bake time in the ``expected`` column, so the worker can check a
compiled engine at start-up without scoring with LightGBM.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctr_inference.contract import CATEGORICAL_FREQUENCY, Feature

CHECK_ROWS_FILE = "check_rows.parquet"
KIND_COLUMN = "check_kind"
EXPECTED_COLUMN = "expected"

ORDINARY = "ordinary"
MISSING = "missing"
THRESHOLD = "threshold"
ABOVE = "above"
BELOW = "below"
CATEGORICAL = "categorical"
KINDS = (ORDINARY, MISSING, THRESHOLD, ABOVE, BELOW, CATEGORICAL)

# Values written into categorical columns for the ``categorical`` kind.
FREQUENCY_SPECIAL_VALUES = (0.0, -1.0, -1_000_000.0)
NATIVE_NEGATIVE_CODES = (-1.0, -7.0)
NATIVE_HUGE_CODE = float(2**31 - 2)


@dataclass
class SplitPoints:
    """Split values of one feature in a model: numeric thresholds and native category codes."""

    thresholds: set[float] = field(default_factory=set)
    categories: set[int] = field(default_factory=set)


@dataclass
class CheckRows:
    """A check-row matrix, in the model's feature order, with each row's kind."""

    matrix: np.ndarray
    kinds: np.ndarray
    expected: np.ndarray | None = None

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def counts(self) -> dict[str, int]:
        """Return how many rows of each kind there are."""
        names, counts = np.unique(self.kinds, return_counts=True)
        return {str(name): int(count) for name, count in zip(names, counts)}


def split_points(model_dump: dict) -> dict[int, SplitPoints]:
    """Collect every split value per feature index from ``Booster.dump_model()``."""
    points: dict[int, SplitPoints] = {}
    for tree in model_dump.get("tree_info", []):
        stack = [tree.get("tree_structure", {})]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            entry = points.setdefault(int(node["split_feature"]), SplitPoints())
            if node.get("decision_type") == "==":
                # Native categorical splits list the categories that go left: "1||4||9".
                entry.categories.update(int(code) for code in str(node["threshold"]).split("||"))
            else:
                entry.thresholds.add(float(node["threshold"]))
            stack.append(node["left_child"])
            stack.append(node["right_child"])
    return points


def make_check_rows(
    booster,
    features: list[Feature],
    *,
    sample: np.ndarray | None = None,
    ordinary_rows: int = 256,
    seed: int = 0,
) -> CheckRows:
    """Build the check rows of a model and score them with LightGBM into ``expected``.

    Args:
        booster: the ``lightgbm.Booster`` the rows are made for.
        features: the bundle's features in the model's column order; the kind
            ``categorical_frequency`` marks frequency-encoded categoricals.
        sample: optional real feature rows (float64, model column order) to use
            as ordinary rows.
        ordinary_rows: how many ordinary rows to take or generate.
        seed: seed of the generated values.

    Raises:
        ValueError: ``features`` or ``sample`` does not have the model's number of columns.
    """
    columns = booster.num_feature()
    if len(features) != columns:
        raise ValueError(f"the model has {columns} features, the feature list has {len(features)}")
    if sample is not None and (sample.ndim != 2 or sample.shape[1] != columns):
        raise ValueError(f"sample rows have shape {sample.shape}, expected (n, {columns})")

    rng = np.random.default_rng(seed)
    points = split_points(booster.dump_model())
    native = {index for index, entry in points.items() if entry.categories}
    frequency = {index for index, feature in enumerate(features) if feature.kind == CATEGORICAL_FREQUENCY}

    blocks: list[tuple[str, np.ndarray]] = []
    ordinary = _ordinary_rows(rng, points, columns, ordinary_rows, sample)
    blocks.append((ORDINARY, ordinary))
    blocks.append((MISSING, _missing_rows(ordinary[0], native | frequency)))
    for kind, block in _threshold_rows(points, ordinary).items():
        blocks.append((kind, block))
    blocks.append((CATEGORICAL, _categorical_rows(ordinary[0], points, native, frequency)))

    matrix = np.vstack([block for _, block in blocks if block.size])
    kinds = np.concatenate([np.full(block.shape[0], kind, dtype=object) for kind, block in blocks if block.size])
    expected = booster.predict(matrix, num_threads=1)
    return CheckRows(matrix=matrix, kinds=kinds, expected=np.asarray(expected, dtype=np.float64))


def _ordinary_rows(rng, points, columns, count, sample) -> np.ndarray:
    if sample is not None and sample.shape[0]:
        picked = rng.choice(sample.shape[0], size=min(count, sample.shape[0]), replace=False)
        return np.asarray(sample[np.sort(picked)], dtype=np.float64)

    matrix = np.empty((count, columns), dtype=np.float64)
    for column in range(columns):
        entry = points.get(column, SplitPoints())
        if entry.categories:
            matrix[:, column] = rng.choice(sorted(entry.categories), size=count)
        elif entry.thresholds:
            # Values between neighbouring thresholds reach every leaf region of the feature.
            edges = np.array(sorted(entry.thresholds))
            low = np.concatenate([[edges[0] - 1.0], edges])
            high = np.concatenate([edges, [edges[-1] + 1.0]])
            region = rng.integers(0, low.size, count)
            matrix[:, column] = low[region] + rng.random(count) * (high[region] - low[region])
        else:
            matrix[:, column] = rng.uniform(0.0, 100.0, count)
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    return matrix


def _missing_rows(base: np.ndarray, categorical: set[int]) -> np.ndarray:
    columns = base.size
    rows = [np.full(columns, np.nan)]
    numeric_missing = base.copy()
    categorical_missing = base.copy()
    for column in range(columns):
        if column in categorical:
            categorical_missing[column] = np.nan
        else:
            numeric_missing[column] = np.nan
    rows += [numeric_missing, categorical_missing]
    for column in range(columns):
        row = base.copy()
        row[column] = np.nan
        rows.append(row)
    return np.vstack(rows)


def _threshold_rows(points, ordinary: np.ndarray) -> dict[str, np.ndarray]:
    # Row r puts the r-th threshold of every feature into that feature's column,
    # so every threshold appears once per kind and the row count is the largest
    # per-feature threshold count, not the total.
    numeric = {index: np.array(sorted(entry.thresholds)) for index, entry in points.items() if entry.thresholds}
    if not numeric:
        empty = np.empty((0, ordinary.shape[1]))
        return {THRESHOLD: empty, ABOVE: empty, BELOW: empty}
    count = max(values.size for values in numeric.values())
    base = np.resize(ordinary, (count, ordinary.shape[1]))
    blocks = {}
    for kind, shift in ((THRESHOLD, None), (ABOVE, np.inf), (BELOW, -np.inf)):
        block = base.copy()
        for column, values in numeric.items():
            chosen = values[np.arange(count) % values.size]
            block[:, column] = chosen if shift is None else np.nextafter(chosen, shift)
        blocks[kind] = block
    return blocks


def _categorical_rows(base: np.ndarray, points, native: set[int], frequency: set[int]) -> np.ndarray:
    specials: dict[int, list[float]] = {column: list(FREQUENCY_SPECIAL_VALUES) for column in frequency}
    for column in native:
        unseen = float(max(points[column].categories) + 1)
        specials[column] = [unseen, *NATIVE_NEGATIVE_CODES, NATIVE_HUGE_CODE]
    if not specials:
        return np.empty((0, base.size))

    rows = []
    # One row per special value with every categorical column set at once ...
    for position in range(max(len(values) for values in specials.values())):
        row = base.copy()
        for column, values in specials.items():
            row[column] = values[position % len(values)]
        rows.append(row)
    # ... and one per (column, value), so a wrong branch is not hidden by another.
    for column, values in sorted(specials.items()):
        for value in values:
            row = base.copy()
            row[column] = value
            rows.append(row)
    return np.vstack(rows)


def write_check_rows(path: str | os.PathLike, rows: CheckRows, features: list[Feature]) -> None:
    """Write check rows to Parquet atomically: one float64 column per feature, kind, expected."""
    path = Path(path)
    arrays = [pa.array(rows.matrix[:, j], pa.float64()) for j in range(rows.matrix.shape[1])]
    names = [feature.name for feature in features]
    arrays.append(pa.array(rows.kinds.astype(str), pa.string()))
    names.append(KIND_COLUMN)
    if rows.expected is not None:
        arrays.append(pa.array(rows.expected, pa.float64()))
        names.append(EXPECTED_COLUMN)
    table = pa.Table.from_arrays(arrays, names=names)

    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".check-rows-", suffix=".parquet")
    os.close(handle)
    try:
        # NaN stays NaN (not null), and no timestamps are written, so the file is reproducible.
        pq.write_table(table, temporary, compression="zstd", write_statistics=False)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def read_check_rows(path: str | os.PathLike, features: list[Feature]) -> CheckRows:
    """Read check rows written by ``write_check_rows``, columns in ``features`` order.

    Raises:
        KeyError: a feature or the kind column is not in the file.
    """
    table = pq.read_table(path)
    matrix = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, feature in enumerate(features):
        matrix[:, j] = table.column(feature.name).to_numpy(zero_copy_only=False)
    kinds = np.array(table.column(KIND_COLUMN).to_pylist(), dtype=object)
    expected = None
    if EXPECTED_COLUMN in table.column_names:
        expected = table.column(EXPECTED_COLUMN).to_numpy(zero_copy_only=False).astype(np.float64)
    return CheckRows(matrix=matrix, kinds=kinds, expected=expected)


def max_abs_diff_by_kind(rows: CheckRows, predictions: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Return the maximum absolute difference per check-row kind (NaN anywhere counts as infinite)."""
    difference = np.abs(np.asarray(predictions, dtype=np.float64) - np.asarray(reference, dtype=np.float64))
    difference[np.isnan(difference)] = np.inf
    result = {}
    for kind in sorted(set(rows.kinds.tolist())):
        mask = rows.kinds == kind
        result[str(kind)] = float(difference[mask].max()) if mask.any() else 0.0
    return result
