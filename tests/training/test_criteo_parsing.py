"""The feature job's parser on the quirks of real Criteo logs."""

from __future__ import annotations

import gzip

import pyarrow.parquet as pq
import pytest
from ctr_training import criteo
from ctr_training.features import (
    InputError,
    parse_lines,
    read_lines,
    run_feature_job,
    split_malformed,
)


def criteo_line(label="0", integers=None, categoricals=None) -> str:
    integers = integers if integers is not None else ["1"] * 13
    categoricals = categoricals if categoricals is not None else ["68fd1e64"] * 26
    return "\t".join([label, *integers, *categoricals])


def parse(spark, tmp_path, lines: list[str], name="logs.tsv", labelled=True):
    path = tmp_path / name
    text = "\n".join(lines) + "\n"
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return {row.row_id: row for row in parse_lines(read_lines(spark, [str(path)]), labelled).collect()}


def test_trailing_tabs_are_missing_categoricals(spark, tmp_path):
    line = criteo_line(categoricals=["68fd1e64"] * 20 + [""] * 6)
    assert line.endswith("\t\t\t\t\t\t")
    rows = parse(spark, tmp_path, [line])
    assert rows[1]["_error"] is None
    assert rows[1]["C20"] == "68fd1e64"
    assert rows[1]["C21"] is None
    assert rows[1]["C26"] is None


def test_extra_empty_trailing_field_is_accepted(spark, tmp_path):
    rows = parse(spark, tmp_path, [criteo_line() + "\t"])
    assert rows[1]["_error"] is None


def test_empty_fields_are_null(spark, tmp_path):
    integers = [""] * 13
    integers[4] = "7"
    rows = parse(spark, tmp_path, [criteo_line(integers=integers, categoricals=[""] * 26)])
    assert rows[1]["_error"] is None
    assert rows[1]["I1"] is None
    assert rows[1]["I5"] == 7
    assert all(rows[1][name] is None for name in criteo.CATEGORICAL_COLUMNS)


def test_negative_integers_parse(spark, tmp_path):
    integers = ["1", "-2", "-1"] + ["0"] * 10
    rows = parse(spark, tmp_path, [criteo_line(integers=integers)])
    assert rows[1]["_error"] is None
    assert rows[1]["I2"] == -2
    assert rows[1]["I3"] == -1


def test_short_line_is_malformed(spark, tmp_path):
    short = "\t".join(criteo_line().split("\t")[:30])
    rows = parse(spark, tmp_path, [criteo_line(), short])
    assert rows[1]["_error"] is None
    assert rows[2]["_error"] == "expected 40 fields, found 30"


def test_non_numeric_integer_is_malformed(spark, tmp_path):
    integers = ["1"] * 13
    integers[6] = "12abc"
    rows = parse(spark, tmp_path, [criteo_line(integers=integers)])
    assert rows[1]["_error"] == "non-numeric integer field I7"


def test_bad_label_is_malformed(spark, tmp_path):
    rows = parse(spark, tmp_path, [criteo_line(label="2")])
    assert rows[1]["_error"] == "label is not 0 or 1"


def test_extra_non_empty_field_is_malformed(spark, tmp_path):
    rows = parse(spark, tmp_path, [criteo_line() + "\tsurplus"])
    assert rows[1]["_error"] == "expected 40 fields, found 41"


def test_gzip_and_plain_give_same_rows(spark, tmp_path):
    lines = [criteo_line(label=str(i % 2), integers=[str(i)] * 13) for i in range(50)]
    plain = parse(spark, tmp_path, lines, name="plain.tsv")
    packed = parse(spark, tmp_path, lines, name="packed.tsv.gz")
    assert plain == packed
    assert sorted(plain) == list(range(1, 51))


def test_row_ids_follow_lines_across_files(spark, tmp_path):
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv.gz"
    first.write_text("\n".join(criteo_line(integers=[str(i)] * 13) for i in range(3)) + "\n")
    with gzip.open(second, "wt") as handle:
        handle.write("\n".join(criteo_line(integers=[str(100 + i)] * 13) for i in range(2)) + "\n")
    rows = {r.row_id: r for r in parse_lines(read_lines(spark, [str(first), str(second)])).collect()}
    assert [rows[i]["I1"] for i in range(1, 6)] == [0, 1, 2, 100, 101]


def test_unlabelled_lines_have_39_fields(spark, tmp_path):
    line = "\t".join(criteo_line().split("\t")[1:])
    rows = parse(spark, tmp_path, [line], labelled=False)
    assert rows[1]["_error"] is None
    assert "label" not in rows[1].asDict()


def test_malformed_report_lists_line_numbers(spark, tmp_path):
    lines = [criteo_line() for _ in range(300)]
    lines[9] = "garbage"
    lines[199] = criteo_line(label="x")
    path = tmp_path / "logs.tsv"
    path.write_text("\n".join(lines) + "\n")
    parsed = parse_lines(read_lines(spark, [str(path)]))
    valid, report = split_malformed(parsed, 0.01, "logs.tsv")
    assert report.malformed == 2
    assert report.examples == [(10, "expected 40 fields, found 1"), (200, "label is not 0 or 1")]
    assert valid.count() == 298


def test_too_many_malformed_lines_fail(spark, tmp_path):
    lines = [criteo_line() for _ in range(50)] + ["bad"] * 2
    path = tmp_path / "logs.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="2 of 52 lines are malformed"):
        split_malformed(parse_lines(read_lines(spark, [str(path)])), 0.01, "logs.tsv")


def test_missing_and_empty_files_fail(spark, tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(InputError, match="does not exist"):
        run_feature_job(spark, [str(tmp_path / "absent.tsv")], tmp_path / "out",
                        encoding_path=tmp_path / "enc.parquet", fit=True)
    with pytest.raises(InputError, match="is empty"):
        run_feature_job(spark, [str(empty)], tmp_path / "out", encoding_path=tmp_path / "enc.parquet", fit=True)


def test_feature_job_encodes_by_training_frequency(spark, tmp_path):
    common, rare = "aaaaaaaa", "bbbbbbbb"
    lines = [criteo_line(categoricals=[common] + ["c"] * 25) for _ in range(6)]
    lines.append(criteo_line(categoricals=[rare] + ["c"] * 25))
    lines.append(criteo_line(categoricals=[""] + ["c"] * 25))
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(lines) + "\n")
    result = run_feature_job(spark, [str(path)], tmp_path / "train", encoding_path=tmp_path / "enc.parquet",
                             fit=True, min_count=2, partitions=3)
    table = pq.read_table(tmp_path / "train").sort_by("row_id")
    assert result.rows == 8
    assert table.column("C1").to_pylist() == [6] * 6 + [0, None]
    assert table.column("C2").to_pylist() == [8] * 8
    assert all(p.stat().st_size > 0 for p in result.partitions)

    unseen = tmp_path / "score.tsv"
    unseen.write_text(criteo_line(categoricals=["zzzzzzzz"] + ["c"] * 25) + "\n")
    run_feature_job(spark, [str(unseen)], tmp_path / "score", encoding_path=tmp_path / "enc.parquet", fit=False)
    scored = pq.read_table(tmp_path / "score")
    assert scored.column("C1").to_pylist() == [0]
    assert scored.column("C2").to_pylist() == [8]
