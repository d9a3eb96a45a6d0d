"""Train the benchmark's reference models once and cache them by configuration.

A model is keyed by the SHA-256 of its training configuration (data seed and
size, LightGBM parameters, LightGBM version), so a rerun reuses the trained
file. Compiled artifacts are keyed later by the model file's own SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import data

logger = logging.getLogger(__name__)

DATA_SEED = 20240611
TRAIN_ROWS = 400_000
SCORE_ROWS = 200_000
FREQUENCY = "frequency"
NATIVE = "native"


@dataclass(frozen=True)
class ModelSpec:
    """One reference model: its size and how categorical features reach LightGBM."""

    name: str
    trees: int
    leaves: int
    encoding: str

    def params(self) -> dict:
        return {
            "objective": "binary",
            "num_leaves": self.leaves,
            "learning_rate": 0.05,
            "min_data_in_leaf": 100,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "max_bin": 255,
            "seed": DATA_SEED,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def cache_key(self) -> str:
        import lightgbm

        config = {
            "spec": asdict(self),
            "params": self.params(),
            "data_seed": DATA_SEED,
            "train_rows": TRAIN_ROWS,
            "lightgbm": lightgbm.__version__,
            "generator": 1,
        }
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


REFERENCE = ModelSpec("reference-500x63", 500, 63, FREQUENCY)
MODELS = (
    REFERENCE,
    ModelSpec("reference-500x63-native", 500, 63, NATIVE),
    ModelSpec("small-100x31", 100, 31, FREQUENCY),
    ModelSpec("small-100x31-native", 100, 31, NATIVE),
)
FULL_MODELS = (
    ModelSpec("large-1000x255", 1000, 255, FREQUENCY),
    ModelSpec("large-1000x255-native", 1000, 255, NATIVE),
)


@dataclass
class TrainedModel:
    """A cached model file with its SHA-256 and how long training took when it was made."""

    spec: ModelSpec
    path: Path
    sha256: str
    train_seconds: float


class Dataset:
    """Training and scoring rows in both encodings, generated once per process."""

    def __init__(self, train_rows: int = TRAIN_ROWS, score_rows: int = SCORE_ROWS):
        shape = data.make_shape(DATA_SEED)
        started = time.perf_counter()
        train = data.draw(shape, train_rows, seed=DATA_SEED + 1, shape_seed=DATA_SEED)
        score = data.draw(shape, score_rows, seed=DATA_SEED + 2, shape_seed=DATA_SEED)
        counts = data.category_counts(train.codes)
        self.labels = train.labels
        self.train = {FREQUENCY: data.frequency_matrix(train, counts), NATIVE: data.native_matrix(train)}
        self.score = {FREQUENCY: data.frequency_matrix(score, counts), NATIVE: data.native_matrix(score)}
        logger.info("generated %d training and %d scoring rows in %.1f s (%.1f%% positive)",
                    train_rows, score_rows, time.perf_counter() - started, 100 * self.labels.mean())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def train_or_load(spec: ModelSpec, dataset_factory, cache_dir: Path) -> TrainedModel:
    """Return the cached model for ``spec``, training it first if the cache has none."""
    directory = cache_dir / "models" / f"{spec.name}-{spec.cache_key()}"
    model_path = directory / "model.lgb"
    info_path = directory / "train.json"
    if model_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        logger.info("model %s: cached at %s", spec.name, model_path)
        return TrainedModel(spec, model_path, sha256_file(model_path), info["train_seconds"])

    import lightgbm

    dataset = dataset_factory()
    features = dataset.train[spec.encoding]
    categorical = list(range(data.NUM_INTEGER, features.shape[1])) if spec.encoding == NATIVE else []
    train_set = lightgbm.Dataset(features, label=dataset.labels, feature_name=data.FEATURE_NAMES,
                                 categorical_feature=categorical or "auto", free_raw_data=True)
    params = dict(spec.params(), num_threads=os.cpu_count() or 1)
    logger.info("model %s: training %d trees with %d leaves on %d rows",
                spec.name, spec.trees, spec.leaves, features.shape[0])
    started = time.perf_counter()
    booster = lightgbm.train(params, train_set, num_boost_round=spec.trees)
    seconds = time.perf_counter() - started

    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / ".model.lgb.tmp"
    booster.save_model(str(temporary))
    os.replace(temporary, model_path)
    info_path.write_text(json.dumps({"train_seconds": seconds, "spec": asdict(spec)}, indent=2))
    logger.info("model %s: trained in %.0f s", spec.name, seconds)
    return TrainedModel(spec, model_path, sha256_file(model_path), seconds)


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Train and cache the benchmark models.")
    parser.add_argument("--full", action="store_true", help="also train the large 1000x255 models")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dataset: list[Dataset] = []

    def factory() -> Dataset:
        if not dataset:
            dataset.append(Dataset())
        return dataset[0]

    for spec in MODELS + (FULL_MODELS if args.full else ()):
        model = train_or_load(spec, factory, args.cache_dir)
        print(spec.name, model.sha256[:12], f"{model.train_seconds:.0f}s")


if __name__ == "__main__":
    _main()
