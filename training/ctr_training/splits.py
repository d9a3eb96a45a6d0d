"""Training data for the pipeline: a time-ordered train/valid/test split and negative downsampling.

Rows are ordered by time: by ``event_time`` then ``row_id`` when the dataset
has a time column, by ``row_id`` (log order) otherwise. The earliest rows
train, the next ``valid_fraction`` validate (early stopping, model choice) and
the latest ``test_fraction`` test (the promotion gate). The cut points are
found in Spark without a global sort: a histogram of rows per time value
(small: one row per distinct time), then a quantile of ``row_id`` among the
rows that share the cut's time value.

Negative downsampling keeps every click and a ``negative_rate`` share of the
non-clicks, in the training split only. Validation and test keep the full
traffic, so their metrics describe production. Whether a row is kept depends
on a hash of its ``row_id`` and the seed, not on partitioning, so reruns keep
the same rows.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import asdict, dataclass

from ctr_training import storage
from ctr_training.datasets import EVENT_TIME, DatasetSpec
from ctr_training.features import (
    LABEL,
    ROW_ID,
    InputError,
    apply_encoding,
    fit_encoding,
    output_columns,
    parse_logs,
    write_encoding,
    write_partitions,
)
from ctr_training.spark_progress import log_spark_progress

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# The test split before encoding: the promotion gate encodes it with each model's own table.
TEST_PARSED = "test_parsed"
ENCODING_FILE = "encoding.parquet"
REPORT_FILE = "report.json"
_HASH_RANGE = 1 << 53


@dataclass(frozen=True)
class Cut:
    """A split point: rows up to (time, row_id) inclusive fall before it.

    ``time`` is in microseconds since the epoch (UTC), None without a time column.
    """

    time: int | None
    row_id: int

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.time is not None:
            moment = datetime.datetime.fromtimestamp(self.time / 1e6, datetime.UTC)
            data["time_utc"] = moment.isoformat()
        return data


@dataclass(frozen=True)
class SplitSettings:
    """Split and sampling settings of the pipeline; every field is a parameter in ``params.yaml``."""

    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    relative_error: float = 0.0
    negative_rate: float = 1.0
    sampling_seed: int = 17

    def validate(self) -> None:
        """Raise ``InputError`` on fractions or a rate outside their ranges."""
        for name in ("valid_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise InputError(f"split {name} must be between 0 and 1, got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction >= 1:
            raise InputError("split valid_fraction + test_fraction must be below 1, got "
                             f"{self.valid_fraction} + {self.test_fraction}")
        if not 0 < self.negative_rate <= 1:
            raise InputError(f"sampling negative_rate must be in (0, 1], got {self.negative_rate}")
        if self.relative_error < 0:
            raise InputError(f"split relative_error must be >= 0, got {self.relative_error}")


def _tie_quantile(rows, rank: int, tied: int, relative_error: float) -> int:
    """Return the row_id with ``rank`` rows at or below it among ``rows`` (``tied`` rows in all)."""
    if rank <= 0:
        return 0
    if rank >= tied:
        return 1 << 62
    # Spark's exact quantile at p is the value at rank ceil(p * n). Asking for half a
    # row below the rank keeps floating-point error from rounding up a row.
    probability = (rank - 0.5) / tied
    return int(rows.approxQuantile(ROW_ID, [probability], relative_error)[0])


def find_cuts(rows, fractions: list[float], has_time: bool, relative_error: float) -> tuple[list[Cut], int]:
    """Return the cut after each cumulative fraction of rows in time order, and the row count.

    With ``relative_error`` 0 the cuts are exact. Above 0 each cut may move by
    that share of the rows (Spark's approxQuantile), which bounds the driver's
    memory on large inputs.
    """
    from pyspark.sql import functions as F

    if not has_time:
        total = rows.count()
        cuts = []
        for fraction in fractions:
            rank = round(total * fraction)
            cuts.append(Cut(None, _tie_quantile(rows, rank, total, relative_error)))
        return cuts, total

    # One row per distinct time value: a week of hourly logs is 168 rows. Times
    # travel as epoch microseconds, so no Python time zone touches them.
    micros = F.unix_micros(F.col(EVENT_TIME))
    histogram = [(r["t"], r["n"]) for r in
                 rows.groupBy(micros.alias("t")).agg(F.count("*").alias("n")).orderBy("t").collect()]
    total = sum(n for _, n in histogram)
    cuts = []
    for fraction in fractions:
        rank = round(total * fraction)
        before = 0
        for time, count in histogram:
            if before + count >= rank:
                break
            before += count
        tied_rows = rows.where(micros == F.lit(time))
        cuts.append(Cut(time, _tie_quantile(tied_rows, rank - before, count, relative_error)))
    return cuts, total


def _before(cut: Cut):
    """Column expression: the row falls at or before ``cut`` in time order."""
    from pyspark.sql import functions as F

    by_row = F.col(ROW_ID) <= F.lit(cut.row_id)
    if cut.time is None:
        return by_row
    micros = F.unix_micros(F.col(EVENT_TIME))
    return (micros < F.lit(cut.time)) | ((micros == F.lit(cut.time)) & by_row)


def time_split(rows, spec: DatasetSpec, settings: SplitSettings):
    """Split rows by time into (train, valid, test) frames and return them with the cuts.

    Raises:
        InputError: a split would be empty.
    """
    has_time = spec.time_column is not None
    train_end = 1 - settings.valid_fraction - settings.test_fraction
    cuts, total = find_cuts(rows, [train_end, 1 - settings.test_fraction], has_time, settings.relative_error)
    first, second = (_before(cut) for cut in cuts)
    frames = {
        "train": rows.where(first),
        "valid": rows.where(~first & second),
        "test": rows.where(~second),
    }
    return frames, cuts, total


def downsample_negatives(rows, rate: float, seed: int):
    """Keep every positive row and a ``rate`` share of the negatives, chosen by a hash of row_id."""
    from pyspark.sql import functions as F

    if rate >= 1:
        return rows
    uniform = F.pmod(F.xxhash64(F.lit(seed), F.col(ROW_ID)), F.lit(_HASH_RANGE)) / F.lit(float(_HASH_RANGE))
    return rows.where((F.col(LABEL) == 1) | (uniform < F.lit(rate)))


@dataclass
class TrainingFeatures:
    """The outputs of the pipeline's feature job: a folder per split, the encoding table and the report."""

    out_dir: str
    encoding_path: str
    partitions: dict[str, list[str]]
    report: dict


def _split_counts(frame) -> dict:
    from pyspark.sql import functions as F

    row = frame.agg(F.count("*").alias("rows"), F.coalesce(F.sum(LABEL), F.lit(0)).alias("clicks")).first()
    return {"rows": int(row["rows"]), "clicks": int(row["clicks"])}


def run_training_feature_job(
    spark, logs: list[str], out_dir: str | os.PathLike, *, spec: DatasetSpec, settings: SplitSettings,
    min_count: int = 5, partitions: int = 8, max_malformed_fraction: float = 0.01,
) -> TrainingFeatures:
    """Parse labelled logs, split them by time, fit the encoding on the training split and write every split.

    Writes under ``out_dir``: ``train/`` (negatives downsampled), ``valid/``,
    ``test/``, ``test_parsed/`` (test before encoding), ``encoding.parquet``
    (fitted on the unsampled training split, so counts describe full
    traffic) and ``report.json``.

    Raises:
        InputError: unlabelled logs, too many malformed lines, or an empty split.
    """
    settings.validate()
    with log_spark_progress(spark, f"training feature job on {len(logs)} log input(s)"):
        logger.info("training feature job: parsing %s and counting malformed lines", ", ".join(map(str, logs)))
        rows, malformed, labelled = parse_logs(spark, logs, spec, max_malformed_fraction)
        if not labelled:
            raise InputError(f"training logs {', '.join(map(str, logs))} have no {spec.label} column")
        rows = rows.persist()
        frames, cuts, total = time_split(rows, spec, settings)

        counts = {name: _split_counts(frame) for name, frame in frames.items()}
        empty = [name for name, c in counts.items() if c["rows"] == 0]
        if empty:
            raise InputError(f"{total} valid rows leave the {', '.join(empty)} split(s) empty; "
                             "give more logs or change split valid_fraction/test_fraction")

        out_dir = str(out_dir)
        store = storage.storage_for(out_dir, spark)
        store.mkdirs(out_dir)
        encoding_path = storage.join(out_dir, ENCODING_FILE)
        write_encoding(fit_encoding(frames["train"], min_count, spec.categorical), encoding_path)

        sampled = downsample_negatives(frames["train"], settings.negative_rate, settings.sampling_seed)
        written = {"train": write_partitions(apply_encoding(sampled, encoding_path, spec),
                                             storage.join(out_dir, "train"), partitions)}
        for name in ("valid", "test"):
            written[name] = write_partitions(apply_encoding(frames[name], encoding_path, spec),
                                             storage.join(out_dir, name), partitions)
        parsed_test = frames["test"].select(*output_columns(frames["test"].columns, spec))
        written[TEST_PARSED] = write_partitions(parsed_test, storage.join(out_dir, TEST_PARSED), partitions)
        counts["train_sampled"] = _split_counts(sampled)
        rows.unpersist()

    report = {
        "dataset": spec.name,
        "rows": total,
        "splits": counts,
        "cuts": {"train_end": cuts[0].to_dict(), "valid_end": cuts[1].to_dict()},
        "sampling": {"negative_rate": settings.negative_rate, "seed": settings.sampling_seed},
        "malformed": malformed.to_dict(),
        "partitions": {name: len(paths) for name, paths in written.items()},
    }
    store.write_bytes(storage.join(out_dir, REPORT_FILE), (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    logger.info("training features: %d rows; train %d (sampled %d), valid %d, test %d", total,
                counts["train"]["rows"], counts["train_sampled"]["rows"], counts["valid"]["rows"],
                counts["test"]["rows"])
    return TrainingFeatures(out_dir, encoding_path, written, report)

