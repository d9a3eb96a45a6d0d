"""Progress lines of running Spark jobs: the interval setting, the stage text, and a real slow job."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from ctr_inference.errors import CtrError
from ctr_training.spark_progress import (
    INTERVAL_ENV,
    describe_running_stages,
    log_spark_progress,
    progress_interval,
)

LOGGER = "ctr_training.spark_progress"


class FakeTracker:
    """A StatusTracker with one job running two stages; stage 9 has already finished."""

    def getActiveJobsIds(self):
        return [2]

    def getJobInfo(self, job_id):
        return SimpleNamespace(jobId=job_id, stageIds=[3, 4], status="RUNNING")

    def getActiveStageIds(self):
        return [4, 3, 9]

    def getStageInfo(self, stage_id):
        stages = {
            3: SimpleNamespace(name="count at /checkout/training/ctr_training/features.py:310", numTasks=40, numCompletedTasks=12,
                               numActiveTasks=2, numFailedTasks=0),
            4: SimpleNamespace(name="parquet at features.py:470", numTasks=8, numCompletedTasks=0,
                               numActiveTasks=0, numFailedTasks=1),
        }
        return stages.get(stage_id)


def test_interval_default_and_off(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert progress_interval() == 15.0
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert progress_interval() == 0.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_interval_rejects_invalid(monkeypatch, value):
    monkeypatch.setenv(INTERVAL_ENV, value)
    with pytest.raises(CtrError, match=INTERVAL_ENV):
        progress_interval()


def test_stage_lines_name_job_and_tasks():
    lines = describe_running_stages(FakeTracker())

    assert lines == [
        "job 2 stage 3 (count at features.py:310): 12/40 tasks done, 2 running",
        "job 2 stage 4 (parquet at features.py:470): 0/8 tasks done, 0 running, 1 failed",
    ]


def test_slow_job_logs_progress(spark, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)

    with log_spark_progress(spark, "slow job", interval=0.5):
        spark.sparkContext.parallelize(range(4), 4).map(lambda x: time.sleep(1.5) or x).collect()

    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines
    assert any(line.startswith("slow job, ") and "tasks done" in line for line in lines)


def test_interval_zero_logs_nothing(spark, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)

    with log_spark_progress(spark, "quiet job", interval=0):
        spark.sparkContext.parallelize(range(4), 4).map(lambda x: time.sleep(0.5) or x).collect()

    assert not [r for r in caplog.records if r.name == LOGGER]
