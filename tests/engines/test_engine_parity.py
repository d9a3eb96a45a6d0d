"""Every compiled engine matches LightGBM within 1e-9 on every kind of check row."""

from __future__ import annotations

import numpy as np
import pytest
from ctr_inference.check_rows import KINDS, make_check_rows
from ctr_inference.engines import (
    COMPILED_ENGINES,
    LIGHTGBM_ZERO_THRESHOLD,
    PARITY_TOLERANCE,
    zero_band_columns,
)

from tests.engines.conftest import FREQUENCY, NATIVE, features_for, new_model_dir, training_rows


@pytest.fixture(scope="module", params=[(engine, encoding) for engine in sorted(COMPILED_ENGINES)
                                        for encoding in (FREQUENCY, NATIVE)],
                ids=lambda pair: f"{pair[0]}-{pair[1]}")
def compiled(request, tmp_path_factory):
    import lightgbm
    from ctr_images.compile import ARTIFACT_SUFFIXES, compile_artifact

    engine, encoding = request.param
    directory = new_model_dir(tmp_path_factory.mktemp(engine), encoding)
    model_file = directory / "model.lgb"
    artifact = directory / f"model{ARTIFACT_SUFFIXES[engine]}"
    compile_artifact(engine, model_file, artifact, "x86-64-v3")
    booster = lightgbm.Booster(model_file=str(model_file))
    return engine, encoding, booster, COMPILED_ENGINES[engine](model_file, artifact, 2)


def read_as_missing_by_tl2cgen(matrix: np.ndarray) -> np.ndarray:
    """Rows with a value that TL2cgen 1.0's generated code takes for missing.

    Its ``union Entry { int missing; double fvalue; }`` marks missing as
    ``missing == -1``, so a double whose low 32 bits are all ones (such as
    -2.4999999999999996, a common LightGBM threshold) goes down the missing branch.
    """
    low_words = np.ascontiguousarray(matrix).view(np.uint64) & np.uint64(0xFFFFFFFF)
    return (low_words == np.uint64(0xFFFFFFFF)).any(axis=1)


@pytest.mark.parametrize("kind", KINDS)
def test_check_row_kind_matches(compiled, kind):
    engine_name, encoding, booster, engine = compiled
    rows = make_check_rows(booster, features_for(encoding))
    mask = rows.kinds == kind
    assert mask.any(), f"no {kind} rows"
    difference = np.abs(engine.predict(rows.matrix[mask]) - rows.expected[mask])
    assert not np.isnan(difference).any()
    if engine_name == "tl2cgen":
        # Every difference of TL2cgen comes from its missing-value encoding, nothing else.
        mismatched = difference > PARITY_TOLERANCE
        explained = read_as_missing_by_tl2cgen(rows.matrix[mask])
        assert not (mismatched & ~explained).any()
        return
    assert difference.max() <= PARITY_TOLERANCE


def test_tl2cgen_reads_low_word_ones_as_missing(tmp_path):
    import lightgbm
    from ctr_images.compile import compile_artifact

    directory = new_model_dir(tmp_path, FREQUENCY)
    compile_artifact("tl2cgen", directory / "model.lgb", directory / "model.so", "x86-64-v3")
    engine = COMPILED_ENGINES["tl2cgen"](directory / "model.lgb", directory / "model.so", 1)
    booster = lightgbm.Booster(model_file=str(directory / "model.lgb"))
    rows = make_check_rows(booster, features_for(FREQUENCY))
    affected = read_as_missing_by_tl2cgen(rows.matrix)
    assert affected.any(), "expected a threshold such as -2.4999999999999996 in the tiny model"
    difference = np.abs(engine.predict(rows.matrix) - rows.expected)
    # If this fails, TL2cgen no longer misreads those values: drop the exception above.
    assert difference.max() > PARITY_TOLERANCE


def test_random_rows_match(compiled):
    _, _, booster, engine = compiled
    matrix, _ = training_rows(rows=3000, seed=11)
    np.testing.assert_allclose(engine.predict(matrix), booster.predict(matrix), rtol=0, atol=1e-12)


def test_row_and_column_major_agree(compiled):
    _, _, _, engine = compiled
    matrix, _ = training_rows(rows=500, seed=12)
    np.testing.assert_array_equal(engine.predict(np.asfortranarray(matrix)),
                                  engine.predict(np.ascontiguousarray(matrix)))


def test_empty_matrix(compiled):
    _, _, _, engine = compiled
    assert engine.predict(np.empty((0, 6))).shape == (0,)


def test_zero_band_values_score_as_zero(compiled, tmp_path):
    _, _, booster, engine = compiled
    model_file = tmp_path / "model.lgb"
    booster.save_model(str(model_file))
    columns = zero_band_columns(model_file)
    if columns.size == 0:
        pytest.skip("this model has no threshold in LightGBM's zero band")
    matrix, _ = training_rows(rows=200, seed=13)
    for value in (LIGHTGBM_ZERO_THRESHOLD, -LIGHTGBM_ZERO_THRESHOLD, 1e-40, -1e-40):
        probe = matrix.copy()
        probe[:, columns] = value
        original = probe.copy()
        np.testing.assert_allclose(engine.predict(probe), booster.predict(probe), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(probe, original)  # the caller's matrix is not changed


def test_zero_band_columns_found_in_model(tmp_path):
    directory = new_model_dir(tmp_path, FREQUENCY)
    columns = zero_band_columns(directory / "model.lgb")
    # "signed" (column 2) takes -3..3, so LightGBM splits it between negatives and zero.
    assert 2 in columns.tolist()
