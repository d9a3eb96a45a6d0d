"""The PySpark feature job: Criteo click logs in, feature partitions (Parquet) out.

The same job prepares training data and inference partitions, so both go
through one parser and one categorical encoding:

1. Read the logs as text (plain or gzip) and give every line a ``row_id``: its
   1-based line number across the input files in the order given. The number
   is computed from each file block's offset, so it is stable across reruns
   and needs no single-partition sort.
2. Parse each line into the explicit schema. A line is malformed when it has
   the wrong field count (extra fields are allowed only when empty, as
   trailing tabs), a non-numeric integer field, or a label other than 0 or 1.
3. Encode each categorical column by frequency: the number of training rows
   that carry the value, 0 for a value seen fewer than ``min_count`` times or
   never, null for a missing value. The table is fitted on training logs
   and shipped in the model bundle; inference partitions reuse it.
4. Write Parquet partitions ordered by ``row_id``, named ``part-NNNNN.parquet``.

Locally the job runs on ``local[*]`` with local paths; on a cluster the same
code reads and writes ``s3://`` paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ctr_inference.errors import CtrError
from ctr_training import criteo

logger = logging.getLogger(__name__)

MALFORMED_REPORT_LIMIT = 100
ERROR = "_error"


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


def spark_session(master: str = "local[*]", app_name: str = "ctr-features", driver_memory: str = "4g"):
    """Start (or reuse) a Spark session bound to loopback.

    Raises:
        CtrError: no Java runtime is on the PATH or in JAVA_HOME.
    """
    check_java()
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run the interpreter that has this package installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "8")
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
        if "://" in path:
            continue
        if not os.path.exists(path):
            raise InputError(f"log file {path} does not exist")
        if os.path.getsize(path) == 0:
            raise InputError(f"log file {path} is empty")


def read_lines(spark, paths: list[str]):
    """Read log files as text with a stable 1-based ``row_id`` (line number across the files)."""
    from pyspark.sql import Window, functions as F

    check_inputs(paths)
    frames = []
    for index, path in enumerate(paths):
        frames.append(
            spark.read.text(path).select(
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
        .select((F.col("_offset") + F.col("_mid") - F.col("_first") + 1).cast("long").alias("row_id"), "value")
    )
    # A gzip file is one block, read by one task: spread its lines over every
    # core before the parsing and encoding steps.
    return numbered.repartition(spark.sparkContext.defaultParallelism * 2)


def parse_lines(lines, labelled: bool = True):
    """Parse text lines into the Criteo schema, with ``_error`` set on malformed lines.

    Integer fields become ``long`` (negative values are valid), categorical
    fields stay strings, and empty fields become null.
    """
    from pyspark.sql import functions as F

    expected = criteo.FIELD_COUNT if labelled else criteo.FIELD_COUNT - 1
    offset = 1 if labelled else 0
    fields = F.split(F.col("value"), "\t", -1)
    count = F.size(fields)

    def field_at(position: int):
        # try_element_at: a short line yields null here and is caught by the field-count check.
        value = F.try_element_at(fields, F.lit(position + 1))
        return F.when(value == "", F.lit(None)).otherwise(value)

    columns = [F.col("row_id")]
    checks = [
        F.when(
            (count < expected)
            | ((count > expected) & (F.array_join(F.slice(fields, expected + 1, 1 << 16), "") != "")),
            F.concat(F.lit(f"expected {expected} fields, found "), count.cast("string")),
        )
    ]
    if labelled:
        label = field_at(0)
        columns.append(F.when(label.isin("0", "1"), label.cast("int")).alias(criteo.LABEL))
        checks.append(F.when(~label.isin("0", "1") | label.isNull(), F.lit("label is not 0 or 1")))
    for i, name in enumerate(criteo.INTEGER_COLUMNS):
        raw = field_at(offset + i)
        numeric = raw.rlike(r"^-?[0-9]{1,18}$")
        columns.append(F.when(numeric, raw.cast("long")).alias(name))
        checks.append(F.when(raw.isNotNull() & ~numeric, F.lit(f"non-numeric integer field {name}")))
    for i, name in enumerate(criteo.CATEGORICAL_COLUMNS):
        columns.append(field_at(offset + len(criteo.INTEGER_COLUMNS) + i).alias(name))

    # The first failing check names the line's problem.
    error = F.coalesce(*checks)
    return lines.select(*columns, error.alias(ERROR))


def detect_labelled(spark, path: str) -> bool:
    """Tell from the first line whether a log file carries labels (40 fields) or not (39)."""
    first = spark.read.text(path).limit(1).collect()
    if not first:
        raise InputError(f"log file {path} has no lines")
    return len(first[0].value.rstrip("\r").split("\t")) != criteo.FIELD_COUNT - 1


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
            for row in parsed.where(F.col(ERROR).isNotNull()).orderBy("row_id")
            .select("row_id", ERROR).limit(MALFORMED_REPORT_LIMIT).collect()
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


def fit_encoding(rows, min_count: int):
    """Count every categorical value in the training rows: the frequency-encoding table.

    Returns a DataFrame ``(feature, value, count)`` of the values seen at least
    ``min_count`` times.
    """
    from pyspark.sql import functions as F

    stacked = rows.select(
        F.explode(F.array(*[
            F.struct(F.lit(name).alias("feature"), F.col(name).alias("value"))
            for name in criteo.CATEGORICAL_COLUMNS
        ])).alias("pair")
    ).select("pair.feature", "pair.value").where(F.col("value").isNotNull())
    return (
        stacked.groupBy("feature", "value").agg(F.count("*").alias("count"))
        .where(F.col("count") >= min_count)
    )


def encode_batch(batch, lookups: dict, columns: list[str]):
    """Frequency-encode the categorical columns of one Arrow record batch.

    ``lookups`` maps a column to ``(values, counts)`` Arrow arrays. A missing
    value stays null, a value not in the table becomes 0.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays, names = [], []
    for name in columns:
        column = batch.column(name)
        if name in lookups:
            values, counts = lookups[name]
            positions = pc.index_in(column, value_set=values)
            encoded = pc.take(counts, positions)
            encoded = pc.if_else(pc.and_(column.is_valid(), encoded.is_null()), pa.scalar(0, pa.int64()), encoded)
            column = encoded.cast(pa.int64())
        arrays.append(column)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def apply_encoding(rows, encoding_path: Path):
    """Replace each categorical column with its frequency count (0 unseen or rare, null missing).

    The encoding table is broadcast once as Parquet bytes, and each task
    encodes whole Arrow batches with hash lookups, so the cost is one pass
    over the rows whatever the number of categorical columns.
    """
    import io

    from pyspark.sql.types import LongType, StructField, StructType

    spark = rows.sparkSession
    payload = spark.sparkContext.broadcast(Path(encoding_path).read_bytes())
    ordered = ["row_id"] + ([criteo.LABEL] if criteo.LABEL in rows.columns else []) + criteo.FEATURE_COLUMNS
    rows = rows.select(*ordered)
    schema = StructType([
        StructField(f.name, LongType(), f.nullable) if f.name in criteo.CATEGORICAL_COLUMNS else f
        for f in rows.schema.fields
    ])

    def encode_partition(batches):
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(payload.value))
        lookups = {}
        for name in criteo.CATEGORICAL_COLUMNS:
            selected = table.filter(pc.equal(table.column("feature"), name))
            lookups[name] = (selected.column("value").combine_chunks(), selected.column("count").combine_chunks())
        for batch in batches:
            yield encode_batch(batch, lookups, ordered)

    return rows.mapInArrow(encode_partition, schema)


def write_partitions(frame, out_dir: str | os.PathLike, partitions: int) -> list[Path]:
    """Write ``frame`` as at most ``partitions`` Parquet files of contiguous ``row_id`` ranges.

    Spark names files ``part-<task>-<uuid>.parquet``; they are renamed to
    ``part-NNNNN.parquet`` in ``row_id`` order, so keys are deterministic. Spark
    writes no file for an empty range, so no empty partition is written.
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".spark")
    shutil.rmtree(staging, ignore_errors=True)
    (
        frame.repartitionByRange(partitions, "row_id")
        .sortWithinPartitions("row_id")
        .write.mode("overwrite").parquet(str(staging))
    )
    written = sorted(staging.glob("part-*.parquet"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    result = []
    for index, path in enumerate(written):
        target = out_dir / f"part-{index:05d}.parquet"
        path.rename(target)
        result.append(target)
    shutil.rmtree(staging)
    logger.info("wrote %d feature partitions to %s", len(result), out_dir)
    return result


@dataclass
class FeatureJobResult:
    """What one run of the feature job read and wrote."""

    partitions: list[Path]
    rows: int
    labelled: bool
    malformed: MalformedLines
    encoding_path: Path


def write_encoding(encoding, path: Path) -> Path:
    """Write the encoding table as one Parquet file sorted by (feature, value), byte-stable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(
        encoding.orderBy("feature", "value").toPandas(), preserve_index=False,
        schema=pa.schema([("feature", pa.string()), ("value", pa.string()), ("count", pa.int64())]),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def run_feature_job(
    spark, logs: list[str], out_dir: str | os.PathLike, *, encoding_path: str | os.PathLike,
    fit: bool, min_count: int = 5, partitions: int = 8, max_malformed_fraction: float = 0.01,
) -> FeatureJobResult:
    """Turn click logs into feature partitions.

    With ``fit`` the categorical encoding is fitted on these logs and written
    to ``encoding_path``; without it the table at ``encoding_path`` (from the
    model bundle) is applied, as for inference partitions.

    Raises:
        InputError: a missing or empty file, or too many malformed lines.
    """
    check_inputs(logs)
    labelled = detect_labelled(spark, logs[0])
    parsed = parse_lines(read_lines(spark, logs), labelled=labelled)
    rows, report = split_malformed(parsed, max_malformed_fraction, source=", ".join(logs))
    rows = rows.persist()
    encoding_path = Path(encoding_path)

    if fit:
        write_encoding(fit_encoding(rows, min_count), encoding_path)
    elif not encoding_path.is_file():
        raise InputError(f"encoding table {encoding_path} does not exist; fit it on training logs first")

    written = write_partitions(apply_encoding(rows, encoding_path), out_dir, partitions)
    count = report.total_lines - report.malformed
    rows.unpersist()
    logger.info("feature job: %d rows, %d malformed lines, %d partitions", count, report.malformed, len(written))
    return FeatureJobResult(written, count, labelled, report, encoding_path)
