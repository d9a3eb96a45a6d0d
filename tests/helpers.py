"""Small builders shared by tests: tiny models, bundles and feature partitions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ctr_inference.bundle import MODEL_FILE, library_versions, write_metadata
from ctr_inference.contract import CATEGORICAL_FREQUENCY, NUMERIC

FEATURES = [("f_num_a", NUMERIC), ("f_num_b", NUMERIC), ("f_cat", CATEGORICAL_FREQUENCY)]


def feature_table(rows: int, seed: int = 0, start_row_id: int = 1, label: bool = True) -> pa.Table:
    """A feature partition with int64 and float64 columns and some nulls."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    b = rng.integers(0, 100, size=rows)
    cat = rng.choice([0, 5, 50, 500], size=rows)
    columns = {
        "row_id": pa.array(np.arange(start_row_id, start_row_id + rows), pa.int64()),
        "f_num_a": pa.array(a, mask=rng.random(rows) < 0.1),
        "f_num_b": pa.array(b, pa.int64()),
        "f_cat": pa.array(cat, pa.int64(), mask=rng.random(rows) < 0.05),
    }
    if label:
        logit = 0.8 * np.nan_to_num(a) + 0.01 * b + 0.002 * cat - 1.5
        columns["label"] = pa.array((rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int32))
    return pa.table(columns)


def train_tiny_booster(trees: int = 10, seed: int = 0):
    import lightgbm
    from ctr_inference.contract import Feature, feature_matrix

    table = feature_table(2000, seed=seed)
    features = [Feature(name, "float64", kind) for name, kind in FEATURES]
    data = lightgbm.Dataset(feature_matrix(table, features), label=table.column("label").to_numpy())
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "seed": seed, "num_threads": 1,
              "deterministic": True}
    return lightgbm.train(params, data, num_boost_round=trees)


def write_tiny_bundle(directory: Path, model_name: str = "tiny", version: str = "1", trees: int = 10,
                      seed: int = 0) -> Path:
    """Write a valid bundle for a tiny model and return its directory."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    train_tiny_booster(trees, seed).save_model(str(directory / MODEL_FILE))
    pq.write_table(pa.table({"feature": ["f_cat"], "value": ["x"], "count": pa.array([5], pa.int64())}),
                   directory / "encoding.parquet")
    write_metadata(directory, {
        "model": {"name": model_name, "version": version, "run_id": "run-" + version},
        "git_commit": "0" * 40,
        "features": [{"name": n, "dtype": "float64", "kind": k} for n, k in FEATURES],
        "encoding": {"kind": "frequency", "file": "encoding.parquet"},
        "libraries": library_versions(),
    })
    return directory
