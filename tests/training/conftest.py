"""Fixtures of the training tests: the real samples, feature splits built once, unique model names.

The feature splits of the real Criteo sample are built once per session
with the shared Spark session, at two negative sampling rates, because each
Spark job costs seconds and several test files read the same splits.
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pytest

from tests.conftest import CTR_DATA

DOWNSAMPLED_RATE = 0.3


@pytest.fixture(scope="session")
def avazu_sample() -> Path:
    path = CTR_DATA / "avazu_dev.csv.gz"
    if not path.exists():
        pytest.skip(f"the Avazu sample is not at {path}")
    return path


def slice_lines(source: Path, target: Path, count: int) -> Path:
    """Write the first ``count`` lines of a (gzip) log file to ``target`` as plain text."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(source, "rt", encoding="utf-8", newline="") as handle, open(target, "w", newline="") as out:
        for number, line in enumerate(handle):
            if number >= count:
                break
            out.write(line)
    return target


def build_training_features(spark, logs: list[str], out_dir: Path, negative_rate: float, spec=None):
    from ctr_training.datasets import CRITEO
    from ctr_training.splits import SplitSettings, run_training_feature_job

    settings = SplitSettings(valid_fraction=0.1, test_fraction=0.2, negative_rate=negative_rate, sampling_seed=17)
    return run_training_feature_job(spark, logs, out_dir, spec=spec or CRITEO, settings=settings, min_count=5,
                                    partitions=4, max_malformed_fraction=0.01)


@pytest.fixture(scope="session")
def criteo_features(spark, criteo_sample, tmp_path_factory):
    """Splits of the whole real Criteo sample without downsampling (train 70%, valid 10%, test 20%)."""
    out_dir = tmp_path_factory.mktemp("criteo-features") / "features"
    return build_training_features(spark, [str(criteo_sample)], out_dir, 1.0)


@pytest.fixture(scope="session")
def criteo_features_downsampled(spark, criteo_sample, tmp_path_factory):
    """The same splits with the training split's negatives downsampled to ``DOWNSAMPLED_RATE``."""
    out_dir = tmp_path_factory.mktemp("criteo-features-sampled") / "features"
    return build_training_features(spark, [str(criteo_sample)], out_dir, DOWNSAMPLED_RATE)


@pytest.fixture
def model_name() -> str:
    """A registered model name no other test uses, since the MLflow server is shared by the session."""
    return f"ctr-test-{uuid.uuid4().hex[:8]}"
