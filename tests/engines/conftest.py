"""Tiny LightGBM models (at most 20 trees) and bundles built from them, compiled once per module."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ctr_inference.bundle import MODEL_FILE, library_versions, load_bundle, write_metadata
from ctr_inference.contract import CATEGORICAL_FREQUENCY, NUMERIC, Feature

FREQUENCY = "frequency"
NATIVE = "native"
FEATURE_NAMES = ["count_a", "count_b", "signed", "ratio", "cat_x", "cat_y"]
CATEGORICAL_COLUMNS = [4, 5]


def training_rows(rows: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows with counts, negative values, zeros, NaN and two categorical columns."""
    rng = np.random.default_rng(seed)
    matrix = np.empty((rows, len(FEATURE_NAMES)))
    matrix[:, 0] = rng.poisson(3.0, rows)
    matrix[:, 1] = np.floor(rng.lognormal(1.0, 1.5, rows))
    matrix[:, 2] = rng.integers(-3, 4, rows)
    matrix[:, 3] = rng.normal(0.0, 1.0, rows)
    matrix[:, 4] = rng.zipf(1.6, rows) % 40
    matrix[:, 5] = rng.integers(0, 25, rows)
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    logit = (np.nan_to_num(matrix[:, 3]) + 0.3 * np.nan_to_num(matrix[:, 2])
             + (np.nan_to_num(matrix[:, 4]) % 3 == 0) - 0.8)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return matrix, labels


def features_for(encoding: str) -> list[Feature]:
    kind = CATEGORICAL_FREQUENCY if encoding == FREQUENCY else NUMERIC
    return [Feature(name, kind=kind if index in CATEGORICAL_COLUMNS else NUMERIC)
            for index, name in enumerate(FEATURE_NAMES)]


def train_tiny(encoding: str, trees: int = 15, leaves: int = 15):
    import lightgbm

    matrix, labels = training_rows()
    categorical = CATEGORICAL_COLUMNS if encoding == NATIVE else "auto"
    dataset = lightgbm.Dataset(matrix, labels, feature_name=FEATURE_NAMES,
                               categorical_feature=categorical)
    params = {"objective": "binary", "num_leaves": leaves, "min_data_in_leaf": 20,
              "min_data_per_group": 5, "cat_smooth": 1.0, "verbose": -1, "seed": 1,
              "deterministic": True, "num_threads": 1}
    return lightgbm.train(params, dataset, num_boost_round=trees)


def write_bundle(directory: Path, encoding: str, compiled: dict | None = None):
    """Write a bundle whose model.lgb is already in ``directory``; return the loaded bundle."""
    metadata = {
        "model": {"name": f"tiny-{encoding}", "version": "1"},
        "features": [feature.to_dict() for feature in features_for(encoding)],
        "libraries": library_versions(),
    }
    if compiled is not None:
        metadata["compiled"] = compiled
    write_metadata(directory, metadata)
    return load_bundle(directory)


def new_model_dir(root: Path, encoding: str) -> Path:
    directory = root / f"bundle-{encoding}"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    train_tiny(encoding).save_model(str(directory / MODEL_FILE))
    return directory


@pytest.fixture(scope="module", params=[FREQUENCY, NATIVE])
def compiled_bundle_dir(request, tmp_path_factory) -> Path:
    """A bundle of each encoding compiled with every engine, built once per test module."""
    from ctr_images.compile import ENGINES, compile_bundle

    encoding = request.param
    directory = new_model_dir(tmp_path_factory.mktemp("compiled"), encoding)
    section = compile_bundle(directory, features_for(encoding), engines=ENGINES)
    write_bundle(directory, encoding, section)
    return directory
