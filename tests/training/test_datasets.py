"""Dataset specs: validation, the params.yaml specs, and Avazu read through the same parser as Criteo."""

from __future__ import annotations

import gzip

import pytest
import yaml
from ctr_training.datasets import AVAZU, CRITEO, DatasetSpec, DatasetSpecError, spec_from_params
from ctr_training.features import InputError, parse_logs

from tests.conftest import REPO_ROOT

AVAZU_HEADER = ",".join(AVAZU.columns)
# A real Avazu row: a 20-digit id above 2**63 and hour 14102100 (2014-10-21 00:00 UTC).
AVAZU_ROW = ("10000169349117863715,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,"
             "a99f214a,96809ac8,711ee120,1,0,15704,320,50,1722,0,35,100084,79")


def params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_params_specs_equal_builtin_specs():
    assert spec_from_params(params(), "criteo") == CRITEO
    assert spec_from_params(params(), "avazu") == AVAZU


def test_params_selects_criteo():
    assert spec_from_params(params()).name == "criteo"


def test_spec_round_trips_through_dict():
    assert DatasetSpec.from_dict("avazu", AVAZU.to_dict()) == AVAZU
    assert DatasetSpec.from_dict("criteo", CRITEO.to_dict()) == CRITEO


def test_feature_columns_keep_criteo_order():
    assert CRITEO.feature_columns == [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "parquet"}, "format 'parquet' is not one of"),
    ({"label": "clicked"}, "column 'clicked' is not in columns"),
    ({"integer": ["C1", "site_id"]}, "more than one role"),
    ({"time": {"column": "hour"}}, "has no format"),
    ({"time": {"column": "hour", "format": "yyMMddHH", "features": ["minute"]}}, "unknown time features"),
])
def test_invalid_spec_is_rejected(change, message):
    data = dict(AVAZU.to_dict(), **change)
    with pytest.raises(DatasetSpecError, match=message):
        DatasetSpec.from_dict("avazu", data)


def test_missing_keys_are_named():
    with pytest.raises(DatasetSpecError, match="lacks label, integer"):
        DatasetSpec.from_dict("x", {"format": "csv", "header": True, "columns": ["a"], "categorical": [],
                                    "registered_model": "m"})


def test_unknown_dataset_name_lists_known_ones():
    with pytest.raises(DatasetSpecError, match=r"dataset 'kdd' is not defined .*\['avazu', 'criteo'\]"):
        spec_from_params(params(), "kdd")


def write_gzip(path, lines: list[str]):
    with gzip.open(path, "wt", newline="") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def test_avazu_id_hour_and_columns(spark, tmp_path):
    path = write_gzip(tmp_path / "avazu.csv.gz", [AVAZU_HEADER, AVAZU_ROW])
    rows, report, labelled = parse_logs(spark, [str(path)], AVAZU, 0.01)
    row = rows.collect()[0].asDict()

    assert labelled
    assert report.total_lines == 1
    assert row["row_id"] == 2
    assert row["id"] == "10000169349117863715"
    assert row["label"] == 0
    assert row["event_time"].strftime("%Y-%m-%d %H") == "2014-10-21 00"
    assert row["hour_of_day"] == 0
    assert row["day_of_week"] == 3
    assert row["C20"] == "100084"
    assert row["C1"] == 1005


def test_avazu_negative_code_stays_value(spark, tmp_path):
    fields = AVAZU_ROW.split(",")
    fields[AVAZU.columns.index("C20")] = "-1"
    path = write_gzip(tmp_path / "avazu.csv.gz", [AVAZU_HEADER, ",".join(fields)])
    rows, _, _ = parse_logs(spark, [str(path)], AVAZU, 0.01)
    assert rows.collect()[0]["C20"] == "-1"


def test_avazu_bad_hour_and_missing_id_are_malformed(spark, tmp_path):
    bad_hour = AVAZU_ROW.replace(",14102100,", ",14102199,")
    no_id = "," + AVAZU_ROW.split(",", 1)[1]
    lines = [AVAZU_HEADER] + [AVAZU_ROW] * 200 + [bad_hour, no_id]
    path = write_gzip(tmp_path / "avazu.csv.gz", lines)
    with pytest.raises(InputError) as error:
        parse_logs(spark, [str(path)], AVAZU, 0.001)
    assert "2 of 202 lines are malformed" in str(error.value)
    assert "line 202: time field hour is not yyMMddHH" in str(error.value)


def test_wrong_header_is_rejected(spark, tmp_path):
    path = write_gzip(tmp_path / "criteo-as-avazu.csv.gz", ["0\t1\t2", "1\t2\t3"])
    with pytest.raises(InputError, match="does not start with the avazu header"):
        parse_logs(spark, [str(path)], AVAZU, 0.01)


def test_unlabelled_avazu_has_no_label(spark, tmp_path):
    header = ",".join(c for c in AVAZU.columns if c != "click")
    row = ",".join(v for i, v in enumerate(AVAZU_ROW.split(",")) if i != 1)
    path = write_gzip(tmp_path / "test.csv.gz", [header, row])
    rows, _, labelled = parse_logs(spark, [str(path)], AVAZU, 0.01)
    assert not labelled
    assert "label" not in rows.columns
    assert rows.collect()[0]["id"] == "10000169349117863715"


def test_folder_reads_files_in_name_order(spark, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    first = AVAZU_ROW.replace("10000169349117863715", "1")
    second = AVAZU_ROW.replace("10000169349117863715", "2")
    write_gzip(folder / "part-1.csv.gz", [AVAZU_HEADER, second])
    write_gzip(folder / "part-0.csv.gz", [AVAZU_HEADER, first])
    (folder / "_SUCCESS").write_text("")
    rows, _, _ = parse_logs(spark, [str(folder)], AVAZU, 0.01)
    ordered = sorted(rows.select("row_id", "id").collect())
    assert [(r.row_id, r.id) for r in ordered] == [(2, "1"), (4, "2")]
