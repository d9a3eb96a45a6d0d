"""Progress of a running Spark job, logged from a background thread at a fixed interval.

A feature job over a million lines can run for minutes without printing a
line. Spark's own console progress bar is turned off in ``spark_session``,
because it redraws one line with carriage returns and a log file or a CI log
shows that as garbage. This module logs one plain line per interval instead,
read from ``SparkContext.statusTracker()``: every running stage with its
job, name and tasks done of total.

``CTR_SPARK_PROGRESS_SECONDS`` sets the interval (default 15 s); ``0`` turns
the lines off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator

from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

INTERVAL_ENV = "CTR_SPARK_PROGRESS_SECONDS"
DEFAULT_INTERVAL_SECONDS = 15.0
# The folders of a stage's call site, as in "first at /checkout/training/ctr_training/features.py:299".
_CALL_SITE_FOLDERS = re.compile(r"(?<= at )\S*/")


def progress_interval() -> float:
    """Return the logging interval in seconds from ``CTR_SPARK_PROGRESS_SECONDS``; 0 means off.

    Raises:
        CtrError: the variable is not a number of seconds, or is negative.
    """
    value = os.environ.get(INTERVAL_ENV, "").strip()
    if not value:
        return DEFAULT_INTERVAL_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise CtrError(f"{INTERVAL_ENV} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise CtrError(f"{INTERVAL_ENV} must be 0 (off) or a positive number of seconds, got {value!r}")
    return seconds


def describe_running_stages(tracker) -> list[str]:
    """Describe each running stage as ``job J stage S (NAME): D/T tasks done, R running``.

    ``tracker`` is a ``pyspark.StatusTracker``. A stage that finished between
    the two calls to the tracker is left out.
    """
    job_of_stage = {}
    for job_id in tracker.getActiveJobsIds():
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else ():
            job_of_stage[stage_id] = job_id

    lines = []
    for stage_id in sorted(tracker.getActiveStageIds()):
        stage = tracker.getStageInfo(stage_id)
        if stage is None:
            continue
        job = job_of_stage.get(stage_id)
        prefix = f"job {job} stage {stage_id}" if job is not None else f"stage {stage_id}"
        name = _CALL_SITE_FOLDERS.sub("", stage.name)
        line = (f"{prefix} ({name}): {stage.numCompletedTasks}/{stage.numTasks} tasks done, "
                f"{stage.numActiveTasks} running")
        if stage.numFailedTasks:
            line += f", {stage.numFailedTasks} failed"
        lines.append(line)
    return lines


@contextlib.contextmanager
def log_spark_progress(spark, label: str, interval: float | None = None) -> Iterator[None]:
    """Log the running Spark stages every ``interval`` seconds while the block runs.

    ``interval`` defaults to ``progress_interval()``; 0 logs nothing. The
    thread is a daemon and stops when the block exits, also on an error.
    """
    interval = progress_interval() if interval is None else interval
    if interval <= 0:
        yield
        return

    from py4j.protocol import Py4JError

    tracker = spark.sparkContext.statusTracker()
    started = time.monotonic()
    done = threading.Event()

    def report() -> None:
        while not done.wait(interval):
            try:
                stages = describe_running_stages(tracker)
            except Py4JError as error:
                # The JVM is gone because the session stopped inside the block, so nothing is left to follow.
                logger.debug("%s: stopped following Spark progress: %s", label, error)
                return
            elapsed = time.monotonic() - started
            if stages:
                logger.info("%s, %.0f s: %s", label, elapsed, "; ".join(stages))
            else:
                logger.info("%s, %.0f s: no Spark stage running (the driver is between stages)", label, elapsed)

    thread = threading.Thread(target=report, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=interval + 5)
