"""Session-wide fixtures: the shared data folder, one Spark session, and real local services.

S3 and SQS come from LocalStack through testcontainers when ``docker info``
succeeds, otherwise from a moto server subprocess. Both start on a free
loopback port, and the same tests run against either.
MLflow runs as a real tracking server with a SQLite store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
CTR_DATA = SHARED / "data" / "ctr"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def docker_available() -> bool:
    """Return True when ``docker info`` succeeds, so a Docker engine runs here."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def criteo_sample() -> Path:
    path = CTR_DATA / "criteo_dev.tsv.gz"
    if not path.exists():
        pytest.skip(f"the Criteo sample is not at {path}")
    return path


@pytest.fixture(scope="session")
def spark():
    """The one Spark session of the test run."""
    from ctr_training.features import spark_session

    session = spark_session(driver_memory="2g")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory):
    """URL of an S3/SQS endpoint on loopback: LocalStack with Docker, else a moto server."""
    from ctr.services import MotoServer, aws_environment

    if docker_available():
        from testcontainers.localstack import LocalStackContainer

        container = LocalStackContainer().with_services("s3", "sqs")
        container.start()
        url = container.get_url()
        stop = container.stop
    else:
        server = MotoServer(None, tmp_path_factory.mktemp("moto-logs")).start()
        url, stop = server.url, server.stop
    saved = {k: os.environ.get(k) for k in aws_environment(url)}
    os.environ.update(aws_environment(url))
    yield url
    stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """URL of a real MLflow tracking server with a SQLite store, for the whole session."""
    from ctr.services import MlflowServer

    root = tmp_path_factory.mktemp("mlflow")
    server = MlflowServer(None, root / "logs", root / "store").start(timeout=180)
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    yield server.url
    server.stop()


@pytest.fixture
def s3(aws_endpoint):
    import boto3

    return boto3.client("s3")


@pytest.fixture
def sqs(aws_endpoint):
    import boto3

    return boto3.client("sqs")
