"""Feature parity: what Spark writes for a partition is what the scorer expects.

A plain-Python reference parses and encodes the same lines without Spark.
The written partitions must match it value for value, carry the dtypes the
bundle records, and score through ``Scorer`` with the bundle's encoding. Checked on the real Criteo sample and on lines with every quirk
of real Criteo files.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ctr_inference.bundle import library_versions, load_bundle, write_metadata
from ctr_inference.contract import check_columns, feature_matrix
from ctr_inference.scorer import Scorer
from ctr_training.datasets import CRITEO
from ctr_training.features import run_feature_job
from ctr_training.train import features_of, fit_booster, read_features

MIN_COUNT = 5


def reference_parse(lines: list[str], first_row_id: int = 1) -> tuple[list[dict], int]:
    """Parse Criteo lines the way the format defines them; return valid rows and the malformed count."""
    rows, malformed = [], 0
    for offset, line in enumerate(lines):
        fields = line.rstrip("\r\n").split("\t")
        extra = fields[40:]
        if len(fields) < 40 or any(extra) or fields[0] not in ("0", "1"):
            malformed += 1
            continue
        row = {"row_id": first_row_id + offset, "label": int(fields[0])}
        for i, name in enumerate(CRITEO.integer, start=1):
            row[name] = int(fields[i]) if fields[i] else None
        for i, name in enumerate(CRITEO.categorical, start=14):
            row[name] = fields[i] or None
        rows.append(row)
    return rows, malformed


def reference_encoding(train_rows: list[dict], min_count: int) -> dict[str, Counter]:
    counts = {name: Counter(r[name] for r in train_rows if r[name] is not None) for name in CRITEO.categorical}
    return {name: Counter({v: c for v, c in counter.items() if c >= min_count}) for name, counter in counts.items()}


def reference_encode(rows: list[dict], encoding: dict[str, Counter]) -> list[dict]:
    encoded = []
    for row in rows:
        out = dict(row)
        for name in CRITEO.categorical:
            out[name] = None if row[name] is None else encoding[name].get(row[name], 0)
        encoded.append(out)
    return encoded


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        return handle.read().split("\n")[:-1]


def as_rows(table: pa.Table, columns: list[str]) -> list[dict]:
    return table.select(columns).to_pylist()


@pytest.fixture(scope="module")
def reference(criteo_sample):
    rows, malformed = reference_parse(read_lines(criteo_sample))
    total = len(rows)
    train_end, valid_end = round(total * (1 - 0.1 - 0.2)), round(total * (1 - 0.2))
    splits = {"train": rows[:train_end], "valid": rows[train_end:valid_end], "test": rows[valid_end:]}
    return splits, reference_encoding(splits["train"], MIN_COUNT), malformed


COLUMNS = ["row_id", "label", *CRITEO.feature_columns]


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_spark_splits_match_reference(criteo_features, reference, split):
    splits, encoding, _ = reference
    written = read_features(Path(criteo_features.out_dir) / split)
    assert as_rows(written, COLUMNS) == reference_encode(splits[split], encoding)


def test_parsed_test_split_keeps_raw_values(criteo_features, reference):
    splits, _, _ = reference
    parsed = read_features(Path(criteo_features.out_dir) / "test_parsed")
    assert as_rows(parsed, COLUMNS) == splits["test"]


def test_encoding_table_matches_reference(criteo_features, reference):
    _, encoding, _ = reference
    table = pq.read_table(criteo_features.encoding_path)
    written = {(r["feature"], r["value"]): r["count"] for r in table.to_pylist()}
    expected = {(name, value): count for name, counter in encoding.items() for value, count in counter.items()}
    assert written == expected
    assert table.column_names == ["feature", "value", "count"]


def test_partition_schema_is_the_contract(criteo_features):
    for split in ("train", "valid", "test"):
        for path in sorted((Path(criteo_features.out_dir) / split).glob("*.parquet")):
            schema = pq.read_schema(path)
            assert schema.names == COLUMNS, path
            assert schema.field("row_id").type == pa.int64()
            assert schema.field("label").type == pa.int32()
            for name in CRITEO.feature_columns:
                assert schema.field(name).type == pa.int64(), (path, name)


def test_partitions_are_named_and_not_empty(criteo_features):
    for split, paths in criteo_features.partitions.items():
        names = [Path(p).name for p in paths]
        assert names == [f"part-{i:05d}.parquet" for i in range(len(names))], split
        assert all(pq.ParquetFile(p).metadata.num_rows > 0 for p in paths), split


def make_bundle(directory: Path, booster, features, encoding_path: Path) -> Path:
    directory.mkdir(parents=True)
    booster.save_model(str(directory / "model.lgb"))
    (directory / "encoding.parquet").write_bytes(Path(encoding_path).read_bytes())
    write_metadata(directory, {
        "model": {"name": "parity", "version": "1", "run_id": "none"},
        "git_commit": "0" * 40,
        "features": [f.to_dict() for f in features],
        "encoding": {"kind": "frequency", "file": "encoding.parquet", "unseen": 0, "missing": "null"},
        "libraries": library_versions(),
    })
    return directory


@pytest.fixture(scope="module")
def scoring_bundle(criteo_features, tmp_path_factory):
    out = Path(criteo_features.out_dir)
    train, valid = read_features(out / "train"), read_features(out / "valid")
    features = features_of(train.schema, list(CRITEO.categorical), CRITEO.feature_columns)
    params = {"objective": "binary", "num_leaves": 15, "verbosity": -1, "num_threads": 1, "seed": 1,
              "deterministic": True, "force_row_wise": True}
    booster = fit_booster(params, 10, train, valid, features)
    bundle_dir = make_bundle(tmp_path_factory.mktemp("bundle") / "bundle", booster, features,
                             criteo_features.encoding_path)
    return load_bundle(bundle_dir), booster


def test_bundle_features_match_partitions(criteo_features, scoring_bundle):
    bundle, _ = scoring_bundle
    for path in sorted((Path(criteo_features.out_dir) / "test").glob("*.parquet")):
        schema = pq.read_schema(path)
        check_columns(schema, bundle.features)
        for feature in bundle.features:
            assert str(schema.field(feature.name).type) == feature.dtype
    assert [f.name for f in bundle.features] == CRITEO.feature_columns


def test_scorer_scores_spark_partitions(criteo_features, scoring_bundle):
    bundle, booster = scoring_bundle
    scorer = Scorer(bundle, threads=1)
    for path in sorted((Path(criteo_features.out_dir) / "test").glob("*.parquet")):
        table = pq.read_table(path)
        scored = scorer.score(table)
        assert scored.column("row_id").to_pylist() == table.column("row_id").to_pylist()
        expected = booster.predict(feature_matrix(table, bundle.features))
        np.testing.assert_allclose(scored.column("ctr").to_numpy(), expected, rtol=0, atol=1e-12)


def test_gate_encoding_matches_spark(criteo_features, scoring_bundle):
    """The promotion gate encodes parsed rows in Python; it must give Spark's encoded values."""
    from ctr_training.gate import RegisteredModel

    bundle, booster = scoring_bundle
    out = Path(criteo_features.out_dir)
    model = RegisteredModel("parity", "1", "none", booster, bundle.features,
                            pq.read_table(criteo_features.encoding_path), 1.0)
    parsed = read_features(out / "test_parsed")
    encoded = read_features(out / "test")
    np.testing.assert_array_equal(model.predict(parsed), booster.predict(feature_matrix(encoded, bundle.features)))


def quirky_lines(source: Path) -> tuple[list[str], int]:
    """Real lines with every quirk: trailing tabs, stripped trailing tabs (short), CRLF, extra empty field."""
    lines = read_lines(source)[:400]
    quirky, short = [], 0
    for number, line in enumerate(lines):
        if number % 50 == 7 and line.endswith("\t"):
            quirky.append(line.rstrip("\t"))  # an editor dropped the trailing empty fields
            short += 1
        elif number % 50 == 11:
            quirky.append(line + "\r")
        elif number % 50 == 13:
            quirky.append(line + "\t")
        else:
            quirky.append(line)
    return quirky, short


def test_quirky_lines_match_reference(spark, criteo_sample, tmp_path):
    lines, short = quirky_lines(criteo_sample)
    assert short > 0
    assert any(line.endswith("\t\t") for line in lines)
    assert any("\t-" in line for line in lines), "the sample has negative I2 values"
    path = tmp_path / "quirky.tsv"
    # No newline after the last line, as in some copies of the data.
    path.write_text("\n".join(lines), newline="")

    result = run_feature_job(spark, [str(path)], tmp_path / "out", encoding_path=tmp_path / "encoding.parquet",
                             fit=True, min_count=2, partitions=3, max_malformed_fraction=0.05)
    rows, malformed = reference_parse(lines)
    assert result.malformed.malformed == malformed == short
    assert result.malformed.total_lines == len(lines)
    expected = reference_encode(rows, reference_encoding(rows, 2))
    assert as_rows(read_features(tmp_path / "out"), COLUMNS) == expected
    assert all(reason.startswith("expected 40 fields, found 3") for _, reason in result.malformed.examples)


def test_inference_partition_uses_training_encoding(spark, criteo_features, reference, tmp_path):
    """Logs to score are encoded with the bundle's table, not refitted: the same values as training."""
    splits, encoding, _ = reference
    test_rows = splits["test"][:300]
    lines = []
    for row in test_rows:
        # Unlabelled, as traffic to score: 39 fields.
        fields = ["" if row[n] is None else str(row[n]) for n in CRITEO.integer]
        fields += [row[n] or "" for n in CRITEO.categorical]
        lines.append("\t".join(fields))
    path = tmp_path / "score.tsv"
    path.write_text("\n".join(lines) + "\n")
    result = run_feature_job(spark, [str(path)], tmp_path / "score", encoding_path=criteo_features.encoding_path,
                             fit=False, partitions=2)
    assert not result.labelled
    written = read_features(tmp_path / "score", labelled=False)
    expected = reference_encode(test_rows, encoding)
    for number, row in enumerate(expected, start=1):
        del row["label"]
        row["row_id"] = number
    assert as_rows(written, ["row_id", *CRITEO.feature_columns]) == expected
