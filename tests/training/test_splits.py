"""The time-ordered split, negative downsampling, empty partitions and URI (Hadoop FileSystem) output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ctr_training.datasets import AVAZU, CRITEO
from ctr_training.features import InputError, write_partitions
from ctr_training.splits import SplitSettings, run_training_feature_job
from ctr_training.train import read_features

from tests.training.conftest import DOWNSAMPLED_RATE, slice_lines


def split_tables(features) -> dict:
    out = Path(features.out_dir)
    return {name: read_features(out / name) for name in ("train", "valid", "test")}


def test_criteo_splits_follow_line_order(criteo_features):
    tables = split_tables(criteo_features)
    train, valid, test = (tables[n].column("row_id").to_numpy() for n in ("train", "valid", "test"))
    assert train.max() < valid.min()
    assert valid.max() < test.min()


def test_split_sizes_are_exact(criteo_features):
    counts = criteo_features.report["splits"]
    total = criteo_features.report["rows"]
    assert total == 15306
    assert counts["train"]["rows"] == round(total * (1 - 0.1 - 0.2))
    assert counts["train"]["rows"] + counts["valid"]["rows"] == round(total * 0.8)
    assert sum(counts[n]["rows"] for n in ("train", "valid", "test")) == total


def test_report_is_written(criteo_features):
    report = json.loads((Path(criteo_features.out_dir) / "report.json").read_text())
    assert report == criteo_features.report
    assert report["sampling"] == {"negative_rate": 1.0, "seed": 17}
    assert report["cuts"]["train_end"]["time"] is None


def test_downsampling_keeps_every_click(criteo_features, criteo_features_downsampled):
    full = split_tables(criteo_features)["train"]
    sampled = split_tables(criteo_features_downsampled)["train"]
    clicks = full.filter(full.column("label").to_numpy() == 1).column("row_id").to_pylist()
    sampled_clicks = sampled.filter(sampled.column("label").to_numpy() == 1).column("row_id").to_pylist()
    assert sampled_clicks == clicks


def test_downsampling_keeps_rate_of_negatives(criteo_features, criteo_features_downsampled):
    full = criteo_features.report["splits"]["train"]
    sampled = criteo_features_downsampled.report["splits"]["train_sampled"]
    negatives, kept = full["rows"] - full["clicks"], sampled["rows"] - sampled["clicks"]
    # About 8,300 negatives: the binomial standard deviation of the kept share is 0.005.
    assert abs(kept / negatives - DOWNSAMPLED_RATE) < 0.02


def test_downsampling_leaves_valid_and_test_whole(criteo_features, criteo_features_downsampled):
    for name in ("valid", "test", "test_parsed"):
        full = read_features(Path(criteo_features.out_dir) / name)
        sampled = read_features(Path(criteo_features_downsampled.out_dir) / name)
        assert full.equals(sampled), name


def test_encoding_is_fitted_before_downsampling(criteo_features, criteo_features_downsampled):
    full = Path(criteo_features.encoding_path).read_bytes()
    assert Path(criteo_features_downsampled.encoding_path).read_bytes() == full


def test_avazu_splits_by_hour_then_row(spark, avazu_sample, tmp_path):
    with gzip.open(avazu_sample, "rt") as handle:
        lines = handle.read().splitlines()
    # The first 3,000 lines are all from hour 14102100. A row of a later hour goes
    # right below the header: time, not line order, must place it in the test split.
    late = next(line for line in lines if ",14102221," in line)
    logs = tmp_path / "raw" / "avazu.csv"
    logs.parent.mkdir()
    logs.write_text("\n".join([lines[0], late, *lines[1:3000]]) + "\n")
    settings = SplitSettings(valid_fraction=0.2, test_fraction=0.2)

    result = run_training_feature_job(spark, [str(logs)], tmp_path / "features", spec=AVAZU, settings=settings,
                                      min_count=2, partitions=2)
    tables = split_tables(result)
    moved = tables["test"].filter(tables["test"].column("row_id").to_numpy() == 2)
    assert moved.num_rows == 1
    for earlier, later in (("train", "valid"), ("valid", "test")):
        a = tables[earlier].sort_by([("event_time", "ascending"), ("row_id", "ascending")])
        b = tables[later].sort_by([("event_time", "ascending"), ("row_id", "ascending")])
        last = (a.column("event_time")[-1].as_py(), a.column("row_id")[-1].as_py())
        first = (b.column("event_time")[0].as_py(), b.column("row_id")[0].as_py())
        assert last < first
    assert [tables[n].num_rows for n in ("train", "valid", "test")] == [1800, 600, 600]
    assert result.report["cuts"]["valid_end"]["time_utc"].startswith("2014-10-21T00:00")


def test_too_few_rows_fail(spark, criteo_sample, tmp_path):
    logs = slice_lines(criteo_sample, tmp_path / "raw.tsv", 2)
    with pytest.raises(InputError, match="split"):
        run_training_feature_job(spark, [str(logs)], tmp_path / "features", spec=CRITEO,
                                 settings=SplitSettings(), partitions=2)


@pytest.mark.parametrize(("settings", "message"), [
    (SplitSettings(valid_fraction=0.6, test_fraction=0.4), "must be below 1"),
    (SplitSettings(negative_rate=0.0), "negative_rate must be in"),
    (SplitSettings(test_fraction=1.5), "test_fraction must be between 0 and 1"),
])
def test_invalid_settings_fail(settings, message):
    with pytest.raises(InputError, match=message):
        settings.validate()


def test_empty_frame_writes_no_partition(spark, tmp_path):
    frame = spark.range(0).withColumnRenamed("id", "row_id")
    assert write_partitions(frame, tmp_path / "empty", 4) == []
    assert list((tmp_path / "empty").iterdir()) == []


def test_few_rows_write_no_empty_partition(spark, tmp_path):
    frame = spark.range(1, 4).withColumnRenamed("id", "row_id")
    written = write_partitions(frame, tmp_path / "few", 8)
    assert 1 <= len(written) <= 3
    assert all(pq.ParquetFile(p).metadata.num_rows > 0 for p in written)
    assert sorted(read_features(tmp_path / "few", labelled=False).column("row_id").to_pylist()) == [1, 2, 3]


def test_uri_output_goes_through_hadoop_filesystem(spark, criteo_sample, tmp_path):
    """A file:// URI takes the cluster code path (Hadoop FileSystem), as s3:// does on EMR."""
    logs = slice_lines(criteo_sample, tmp_path / "raw" / "criteo.tsv", 500)
    out_uri = (tmp_path / "features").as_uri()
    settings = SplitSettings(negative_rate=0.5)
    result = run_training_feature_job(spark, [logs.as_uri()], out_uri, spec=CRITEO, settings=settings,
                                      min_count=2, partitions=2)
    assert result.encoding_path == out_uri + "/encoding.parquet"
    names = sorted(p.name for p in (tmp_path / "features" / "train").iterdir() if not p.name.startswith("."))
    assert names == [f"part-{i:05d}.parquet" for i in range(len(names))]
    assert not (tmp_path / "features" / "train.spark").exists()
    report = json.loads((tmp_path / "features" / "report.json").read_text())
    assert report["rows"] == 500
    assert pq.read_table(tmp_path / "features" / "encoding.parquet").num_rows > 0
