"""The PySpark feature job: click logs in, feature partitions (Parquet) out.

The same job prepares training data and inference partitions, so both go
through one parser and one categorical encoding. A dataset spec
(``ctr_training.datasets``) defines how to read the logs, and Criteo is the default.

1. Read the logs as text (plain or gzip) and give every line a ``row_id``: its
   1-based line number across the input files in the order given (a header
   line counts but yields no row). The number is computed from each file
   block's offset, so it is stable across reruns and needs no
   single-partition sort.
2. Parse each line into the explicit schema of the spec. A line is malformed
   when it has the wrong field count (extra fields are allowed only when
   empty, as trailing tabs), a non-numeric integer field, a label other than
   0 or 1, a missing id or an unparsable time field.
3. Encode each categorical column by frequency: the number of training rows
   that carry the value, 0 for a value seen fewer than ``min_count`` times or
   never, null for a missing value. The table is fitted on training logs
   and shipped in the model bundle; inference partitions reuse it.
4. Write Parquet partitions ordered by ``row_id``, named ``part-NNNNN.parquet``,
   never an empty one.

Locally the job runs on ``local[*]`` with local paths; on a cluster the same
code reads and writes ``s3://`` paths (see ``ctr_training.storage``).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ctr_inference.errors import CtrError

from ctr_training import storage
from ctr_training.datasets import CRITEO, EVENT_TIME, DatasetSpec
from ctr_training.spark_progress import log_spark_progress

logger = logging.getLogger(__name__)

MALFORMED_REPORT_LIMIT = 100
ERROR = "_error"
ROW_ID = "row_id"
LABEL = "label"


class InputError(CtrError):
    """A log file is missing, empty or has too many malformed lines."""


@dataclass
class MalformedLines:
    """Malformed lines of one read: the first ones with line numbers, and the total."""

    total_lines: int
    malformed: int
    examples: list[tuple[int, str]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.malformed / self.total_lines if self.total_lines else 0.0

    def to_dict(self) -> dict:
        return {
            "total_lines": self.total_lines,
            "malformed": self.malformed,
            "fraction": self.fraction,
            "first": [{"line": line, "reason": reason} for line, reason in self.examples],
        }


def check_java() -> None:
    """Raise a clear error when no Java runtime is on the PATH or in JAVA_HOME."""
    java_home = os.environ.get("JAVA_HOME")
    if not shutil.which("java") and not (java_home and Path(java_home, "bin", "java").exists()):
        raise CtrError("Java was not found: PySpark needs a Java 17 runtime "
                       "(apt-get install openjdk-17-jre-headless, or set JAVA_HOME)")


def submitted_by_spark_submit() -> bool:
    """Tell whether ``spark-submit`` started this process (it hands over a running JVM gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(master: str | None = "local[*]", app_name: str = "ctr-features", driver_memory: str = "4g"):
    """Start (or reuse) a Spark session.

    Run directly, the session runs on ``master`` (``CTR_SPARK_MASTER`` when
    ``master`` is None) bound to loopback. Run by ``spark-submit``, the master,
    driver memory and cluster settings come from its command line, and only
    the job's own SQL settings are applied here.

    Raises:
        CtrError: no Java runtime is on the PATH or in JAVA_HOME.
    """
    check_java()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if not submitted_by_spark_submit():
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers must run the interpreter that has this package installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.master(master or os.environ.get("CTR_SPARK_MASTER", "local[*]"))
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.memory", driver_memory)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "8")
        )
    return (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Large Arrow batches: the encoder builds its hash lookups once per batch.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "262144")
        # Split plain-text logs into blocks small enough to keep every core busy.
        .config("spark.sql.files.maxPartitionBytes", str(32 << 20))
        .getOrCreate()
    )


def check_inputs(paths: list[str]) -> None:
    """Fail early, with one clear message, on a missing or empty local log file."""
    if not paths:
        raise InputError("no log files given")
    for path in paths:
        if storage.is_uri(path):
            continue
        if not os.path.exists(path):
            raise InputError(f"log file {path} does not exist")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise InputError(f"log file {path} is empty")


def expand_inputs(spark, paths: list[str]) -> list[str]:
    """Replace each folder in ``paths`` by its files in name order, skipping hidden and ``_`` files.

    Raises:
        InputError: a path is missing or empty, or a folder contains no log files.
    """
    check_inputs(paths)
    files = []
    for path in paths:
        store = storage.storage_for(path, spark)
        if not store.is_dir(path):
            files.append(str(path))
            continue
        found = [f for f in store.list(path) if not os.path.basename(f).startswith((".", "_"))]
        if not found:
            raise InputError(f"log folder {path} contains no files")
        check_inputs(found)
        files.extend(found)
    return files


def read_lines(spark, paths: list[str]):
    """Read log files as text with a stable 1-based ``row_id`` (line number across the files)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    check_inputs(paths)
    frames = []
    for index, path in enumerate(paths):
        frames.append(
            spark.read.text(str(path)).select(
                F.lit(index).alias("_file"),
                F.input_file_block_start().alias("_block"),
                F.monotonically_increasing_id().alias("_mid"),
                F.regexp_replace("value", "\r$", "").alias("value"),
            )
        )
    lines = frames[0]
    for frame in frames[1:]:
        lines = lines.unionByName(frame)
    lines = lines.persist()

    # Each (file, block) is read by one task in line order, so a line's number is
    # the lines of earlier blocks plus its position in its own block. The block
    # table is tiny (one row per split), so the running sum runs on one node.
    blocks = lines.groupBy("_file", "_block").agg(F.count("*").alias("_n"), F.min("_mid").alias("_first"))
    ordered = Window.orderBy("_file", "_block").rowsBetween(Window.unboundedPreceding, -1)
    blocks = blocks.withColumn("_offset", F.coalesce(F.sum("_n").over(ordered), F.lit(0)))
    numbered = (
        lines.join(F.broadcast(blocks.select("_file", "_block", "_offset", "_first")), ["_file", "_block"])
        .select((F.col("_offset") + F.col("_mid") - F.col("_first") + 1).cast("long").alias(ROW_ID), "value")
    )
    # A gzip file is one block, read by one task: spread its lines over every
    # core before the parsing and encoding steps.
    return numbered.repartition(spark.sparkContext.defaultParallelism * 2)


def parse_lines(lines, labelled: bool = True, spec: DatasetSpec = CRITEO):
    """Parse text lines into the spec's schema, with ``_error`` set on malformed lines.

    Output columns: ``row_id``, ``label`` (when labelled), the id column as a
    string, ``event_time`` (a UTC timestamp) when the spec has a time column,
    integer fields as ``long`` (negative values are valid) and categorical
    fields as strings. Empty fields become null. Header lines are dropped.
    """
    from pyspark.sql import functions as F

    file_columns = spec.file_columns(labelled)
    expected = len(file_columns)
    if spec.header:
        lines = lines.where(F.col("value") != spec.header_line(labelled))
    fields = F.split(F.col("value"), re.escape(spec.delimiter), -1)
    count = F.size(fields)

    def field_of(name: str):
        # try_element_at: a short line yields null here and is caught by the field-count check.
        value = F.try_element_at(fields, F.lit(file_columns.index(name) + 1))
        return F.when(value == "", F.lit(None)).otherwise(value)

    columns = [F.col(ROW_ID)]
    checks = [
        F.when(
            (count < expected)
            | ((count > expected) & (F.array_join(F.slice(fields, expected + 1, 1 << 16), "") != "")),
            F.concat(F.lit(f"expected {expected} fields, found "), count.cast("string")),
        )
    ]
    if labelled:
        label = field_of(spec.label)
        columns.append(F.when(label.isin("0", "1"), label.cast("int")).alias(LABEL))
        checks.append(F.when(~label.isin("0", "1") | label.isNull(), F.lit("label is not 0 or 1")))
    if spec.id_column:
        # Ids stay strings: Avazu's reach 20 digits, beyond int64.
        identifier = field_of(spec.id_column)
        columns.append(identifier.alias(spec.id_column))
        checks.append(F.when(identifier.isNull(), F.lit(f"missing id field {spec.id_column}")))
    if spec.time_column:
        raw_time = field_of(spec.time_column)
        parsed_time = F.try_to_timestamp(raw_time, F.lit(spec.time_format))
        columns.append(parsed_time.alias(EVENT_TIME))
        checks.append(F.when(parsed_time.isNull(),
                             F.lit(f"time field {spec.time_column} is not {spec.time_format}")))
    for name in spec.integer:
        raw = field_of(name)
        numeric = raw.rlike(r"^-?[0-9]{1,18}$")
        columns.append(F.when(numeric, raw.cast("long")).alias(name))
        checks.append(F.when(raw.isNotNull() & ~numeric, F.lit(f"non-numeric integer field {name}")))
    for name in spec.categorical:
        columns.append(field_of(name).alias(name))

    # The first failing check names the line's problem.
    error = F.coalesce(*checks)
    return lines.select(*columns, error.alias(ERROR))


def add_time_features(rows, spec: DatasetSpec):
    """Add the spec's features derived from ``event_time`` (``long``, null where the time is null)."""
    from pyspark.sql import functions as F

    derived = {"hour_of_day": F.hour(EVENT_TIME), "day_of_week": F.dayofweek(EVENT_TIME)}
    for name in spec.time_features:
        rows = rows.withColumn(name, derived[name].cast("long"))
    return rows


def detect_labelled(spark, path: str, spec: DatasetSpec = CRITEO) -> bool:
    """Tell from the first line whether a log file carries labels.

    With a header the header says so; without one the field count does (one
    field fewer means no label, as in Criteo's test files).

    Raises:
        InputError: the file has no lines, or its header is not the spec's.
    """
    first = spark.read.text(str(path)).limit(1).collect()
    if not first:
        raise InputError(f"log file {path} has no lines")
    line = first[0].value.rstrip("\r")
    if spec.header:
        for labelled in (True, False):
            if line == spec.header_line(labelled):
                return labelled
        raise InputError(f"log file {path} does not start with the {spec.name} header "
                         f"{spec.header_line(True)!r}; found {line[:200]!r}")
    return len(line.split(spec.delimiter)) != len(spec.columns) - 1


def split_malformed(parsed, max_malformed_fraction: float, source: str):
    """Count malformed lines, log the first ones, and return the valid rows and the report.

    Raises:
        InputError: more than ``max_malformed_fraction`` of the lines are malformed,
            or no line is valid.
    """
    from pyspark.sql import functions as F

    totals = parsed.agg(F.count("*").alias("n"), F.count(ERROR).alias("bad")).first()
    examples = []
    if totals.bad:
        examples = [
            (row.row_id, row[ERROR])
            for row in parsed.where(F.col(ERROR).isNotNull()).orderBy(ROW_ID)
            .select(ROW_ID, ERROR).limit(MALFORMED_REPORT_LIMIT).collect()
        ]
    report = MalformedLines(total_lines=totals.n, malformed=totals.bad, examples=examples)
    for line, reason in examples:
        logger.warning("%s line %d is malformed: %s", source, line, reason)
    if report.malformed > len(examples):
        logger.warning("%s: %d more malformed lines not listed", source, report.malformed - len(examples))
    if report.total_lines and report.fraction > max_malformed_fraction:
        raise InputError(
            f"{source}: {report.malformed} of {report.total_lines} lines are malformed "
            f"({report.fraction:.2%}), more than max_malformed_fraction {max_malformed_fraction:.2%}; "
            f"first: line {examples[0][0]}: {examples[0][1]}"
        )
    if report.total_lines == report.malformed:
        raise InputError(f"{source}: no valid lines")
    return parsed.where(F.col(ERROR).isNull()).drop(ERROR), report


def parse_logs(spark, logs: list[str], spec: DatasetSpec, max_malformed_fraction: float):
    """Read, parse and validate logs; return the valid rows (with time features), the report and labelledness.

    Raises:
        InputError: a missing or empty file, a wrong header, or too many malformed lines.
    """
    files = expand_inputs(spark, logs)
    labelled = detect_labelled(spark, files[0], spec)
    if spec.header:
        for path in files[1:]:
            if detect_labelled(spark, path, spec) != labelled:
                raise InputError(f"log files {files[0]} and {path} disagree on having a {spec.label} column")
    parsed = parse_lines(read_lines(spark, files), labelled=labelled, spec=spec)
    rows, report = split_malformed(parsed, max_malformed_fraction, source=", ".join(str(p) for p in logs))
    return add_time_features(rows, spec), report, labelled


def fit_encoding(rows, min_count: int, columns: tuple[str, ...] | list[str] = CRITEO.categorical):
    """Count every categorical value in the training rows: the frequency-encoding table.

    Returns a DataFrame ``(feature, value, count)`` of the values seen at least
    ``min_count`` times.
    """
    from pyspark.sql import functions as F

    stacked = rows.select(
        F.explode(F.array(*[
            F.struct(F.lit(name).alias("feature"), F.col(name).alias("value"))
            for name in columns
        ])).alias("pair")
    ).select("pair.feature", "pair.value").where(F.col("value").isNotNull())
    return (
        stacked.groupBy("feature", "value").agg(F.count("*").alias("count"))
        .where(F.col("count") >= min_count)
    )


def encoding_lookups(table, columns) -> dict:
    """Split an encoding table (``feature, value, count``) into per-column ``(values, counts)`` arrays."""
    import pyarrow.compute as pc

    lookups = {}
    for name in columns:
        selected = table.filter(pc.equal(table.column("feature"), name))
        lookups[name] = (selected.column("value").combine_chunks(), selected.column("count").combine_chunks())
    return lookups


def encode_column(column, values, counts):
    """Frequency-encode one string array: its count in the table, 0 when absent, null when missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    positions = pc.index_in(column, value_set=values)
    encoded = pc.take(counts, positions)
    encoded = pc.if_else(pc.and_(pc.is_valid(column), pc.is_null(encoded)), pa.scalar(0, pa.int64()), encoded)
    return encoded.cast(pa.int64())


def encode_batch(batch, lookups: dict, columns: list[str]):
    """Frequency-encode the categorical columns of one Arrow record batch.

    ``lookups`` maps a column to ``(values, counts)`` Arrow arrays. A missing
    value stays null, a value not in the table becomes 0. Other columns pass
    through unchanged.
    """
    import pyarrow as pa

    arrays, names = [], []
    for name in columns:
        column = batch.column(name)
        if name in lookups:
            column = encode_column(column, *lookups[name])
        arrays.append(column)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def output_columns(columns: list[str], spec: DatasetSpec) -> list[str]:
    """Order a partition's columns: row_id, label, id, event_time, then the features in spec order."""
    leading = [ROW_ID, LABEL, spec.id_column, EVENT_TIME]
    ordered = [c for c in leading if c and c in columns]
    return ordered + [c for c in spec.feature_columns if c in columns]


def apply_encoding(rows, encoding_path: str | os.PathLike, spec: DatasetSpec = CRITEO):
    """Replace each categorical column with its frequency count (0 unseen or rare, null missing).

    The encoding table is broadcast once as Parquet bytes, and each task
    encodes whole Arrow batches with hash lookups, so the cost is one pass
    over the rows whatever the number of categorical columns.
    """
    from pyspark.sql.types import LongType, StructField, StructType

    spark = rows.sparkSession
    payload = spark.sparkContext.broadcast(storage.storage_for(encoding_path, spark).read_bytes(str(encoding_path)))
    ordered = output_columns(rows.columns, spec)
    rows = rows.select(*ordered)
    categorical = set(spec.categorical)
    schema = StructType([
        StructField(f.name, LongType(), f.nullable) if f.name in categorical else f
        for f in rows.schema.fields
    ])

    def encode_partition(batches):
        import pyarrow.parquet as pq

        lookups = encoding_lookups(pq.read_table(io.BytesIO(payload.value)), spec.categorical)
        for batch in batches:
            yield encode_batch(batch, lookups, ordered)

    return rows.mapInArrow(encode_partition, schema)


def _drop_empty_files(store, paths: list[str]) -> list[str]:
    """Delete zero-row Parquet files (Spark writes one when a frame is empty) and return the rest."""
    import pyarrow.parquet as pq

    kept = []
    for path in paths:
        if isinstance(store, storage.LocalStorage):
            rows = pq.ParquetFile(path).metadata.num_rows
        else:
            rows = pq.ParquetFile(io.BytesIO(store.read_bytes(path))).metadata.num_rows
        if rows == 0:
            logger.warning("deleting empty partition file %s", path)
            store.delete(path)
        else:
            kept.append(path)
    return kept


def write_partitions(frame, out_dir: str | os.PathLike, partitions: int) -> list[str]:
    """Write ``frame`` as at most ``partitions`` Parquet files of contiguous ``row_id`` ranges.

    Spark names files ``part-<task>-<uuid>.parquet``; they are renamed to
    ``part-NNNNN.parquet`` in ``row_id`` order, so keys are deterministic. No
    empty partition is written: an empty frame leaves an empty folder.
    Returns the written paths (or URIs).
    """
    spark = frame.sparkSession
    out_dir = str(out_dir)
    store = storage.storage_for(out_dir, spark)
    staging = out_dir.rstrip("/") + ".spark"
    store.delete(staging)
    (
        frame.repartitionByRange(partitions, ROW_ID)
        .sortWithinPartitions(ROW_ID)
        .write.mode("overwrite").parquet(staging)
    )
    written = _drop_empty_files(store, store.list(staging, "part-*.parquet"))
    store.delete(out_dir)
    store.mkdirs(out_dir)
    result = []
    for index, path in enumerate(written):
        target = storage.join(out_dir, f"part-{index:05d}.parquet")
        store.rename(path, target)
        result.append(target)
    store.delete(staging)
    logger.info("wrote %d feature partitions to %s", len(result), out_dir)
    return result


@dataclass
class FeatureJobResult:
    """Summary of one feature-job run: partitions written, rows, labels, malformed lines and encoding."""

    partitions: list[Path]
    rows: int
    labelled: bool
    malformed: MalformedLines
    encoding_path: Path


def write_encoding(encoding, path: str | os.PathLike) -> str | os.PathLike:
    """Write the encoding table as one Parquet file sorted by (feature, value), byte-stable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(
        encoding.orderBy("feature", "value").toPandas(), preserve_index=False,
        schema=pa.schema([("feature", pa.string()), ("value", pa.string()), ("count", pa.int64())]),
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    storage.storage_for(path, encoding.sparkSession).write_bytes(str(path), buffer.getvalue())
    return path


def _as_path(location: str) -> Path | str:
    return location if storage.is_uri(location) else Path(location)


def run_feature_job(
    spark, logs: list[str], out_dir: str | os.PathLike, *, encoding_path: str | os.PathLike,
    fit: bool, min_count: int = 5, partitions: int = 8, max_malformed_fraction: float = 0.01,
    spec: DatasetSpec = CRITEO,
) -> FeatureJobResult:
    """Turn click logs into feature partitions.

    With ``fit`` the categorical encoding is fitted on these logs and written
    to ``encoding_path``; without it the table at ``encoding_path`` (from the
    model bundle) is applied, as for inference partitions.

    Raises:
        InputError: a missing or empty file, or too many malformed lines.
    """
    with log_spark_progress(spark, f"feature job on {len(logs)} log input(s)"):
        logger.info("feature job: parsing %s and counting malformed lines", ", ".join(map(str, logs)))
        rows, report, labelled = parse_logs(spark, logs, spec, max_malformed_fraction)
        rows = rows.persist()
        encoding_path = _as_path(str(encoding_path))

        if fit:
            logger.info("feature job: fitting the encoding on %d lines", report.total_lines - report.malformed)
            write_encoding(fit_encoding(rows, min_count, spec.categorical), encoding_path)
        elif not storage.storage_for(encoding_path, spark).exists(str(encoding_path)):
            raise InputError(f"encoding table {encoding_path} does not exist; fit it on training logs first")

        logger.info("feature job: encoding and writing up to %d partitions to %s", partitions, out_dir)
        written = write_partitions(apply_encoding(rows, encoding_path, spec), out_dir, partitions)
        count = report.total_lines - report.malformed
        rows.unpersist()
    logger.info("feature job: %d rows, %d malformed lines, %d partitions", count, report.malformed, len(written))
    return FeatureJobResult([_as_path(p) for p in written], count, labelled, report, encoding_path)
