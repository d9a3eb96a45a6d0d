"""Bundle verification: checksums, missing files, incompatible versions, and scoring."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from ctr_inference.bundle import load_bundle
from ctr_inference.errors import BundleChecksumError, BundleIncompatibleError, BundleNotFoundError
from ctr_inference.scorer import Scorer

from tests.helpers import feature_table, write_tiny_bundle


def test_valid_bundle_loads_and_scores(tmp_path):
    bundle = load_bundle(write_tiny_bundle(tmp_path / "b"))
    assert bundle.model_version == "1"
    assert [f.name for f in bundle.features] == ["f_num_a", "f_num_b", "f_cat"]
    table = feature_table(100, seed=3, label=False)
    scored = Scorer(bundle, threads=1).score(table)
    assert scored.column("row_id").to_pylist() == table.column("row_id").to_pylist()
    predictions = scored.column("ctr").to_numpy()
    assert ((predictions > 0) & (predictions < 1)).all()
    assert set(scored.column("model_version").to_pylist()) == {"1"}


def test_scores_match_lightgbm_on_reordered_columns(tmp_path):
    bundle = load_bundle(write_tiny_bundle(tmp_path / "b"))
    table = feature_table(50, seed=4, label=False)
    reordered = table.select(["f_cat", "row_id", "f_num_b", "f_num_a"])
    expected = Scorer(bundle, threads=1).predict(table)
    assert np.array_equal(Scorer(bundle, threads=1).predict(reordered), expected)


def test_missing_directory_is_not_found(tmp_path):
    with pytest.raises(BundleNotFoundError, match="bundle.json is missing"):
        load_bundle(tmp_path / "nowhere")


def test_truncated_model_fails_checksum(tmp_path):
    path = write_tiny_bundle(tmp_path / "b")
    model = path / "model.lgb"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(BundleChecksumError, match="model.lgb has SHA-256"):
        load_bundle(path)


def test_deleted_file_is_not_found(tmp_path):
    path = write_tiny_bundle(tmp_path / "b")
    (path / "encoding.parquet").unlink()
    with pytest.raises(BundleNotFoundError, match="missing encoding.parquet"):
        load_bundle(path)


def test_other_lightgbm_major_is_incompatible(tmp_path):
    path = write_tiny_bundle(tmp_path / "b")
    metadata = json.loads((path / "bundle.json").read_text())
    metadata["libraries"]["lightgbm"] = "3.3.5"
    (path / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleIncompatibleError, match="LightGBM 3.3.5"):
        load_bundle(path)



def test_load_bundle_does_not_import_lightgbm(tmp_path):
    # Importing lightgbm costs the worker seconds at start-up, so the version check reads package metadata.
    path = write_tiny_bundle(tmp_path / "b")
    code = ("import sys; from ctr_inference.bundle import load_bundle; "
            f"load_bundle({str(path)!r}); print('lightgbm' in sys.modules)")
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              check=False)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "False"


def test_unparseable_metadata_fails(tmp_path):
    path = write_tiny_bundle(tmp_path / "b")
    (path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleChecksumError, match="not valid JSON"):
        load_bundle(path)


class OrderRecordingEngine:
    """LightGBM's engine under another declared input order, recording the matrices it receives."""

    def __init__(self, bundle, input_order: str):
        from ctr_inference.engines import LightGBMEngine

        self._engine = LightGBMEngine(bundle, 1)
        self.name = "recording"
        self.input_order = input_order
        self.matrices = []

    def predict(self, matrix):
        self.matrices.append(matrix)
        return self._engine.predict(matrix)


@pytest.mark.parametrize("order", ["C", "F"])
def test_scorer_builds_matrix_in_engine_order(tmp_path, order):
    bundle = load_bundle(write_tiny_bundle(tmp_path / "b"))
    table = feature_table(300, seed=5, label=False)
    engine = OrderRecordingEngine(bundle, order)
    predictions = Scorer(bundle, engine=engine).predict(table)
    [matrix] = engine.matrices
    assert matrix.flags.c_contiguous if order == "C" else matrix.flags.f_contiguous
    np.testing.assert_array_equal(predictions, Scorer(bundle, threads=1).predict(table))
