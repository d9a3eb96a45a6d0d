"""S3/SQS commands without a usable AWS setup end with one line naming what to set, not a traceback."""

from __future__ import annotations

import os

import pytest

from ctr.services import aws_environment, free_port
from tests.worker.harness import run_cli

RUN = "2026-12-03.v1"


@pytest.fixture
def bare_env(tmp_path) -> dict:
    """The environment of a machine with no AWS configuration. The instance metadata service is turned off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1",
               AWS_CONFIG_FILE=str(tmp_path / "absent-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "absent-credentials"))
    env.pop("PREDICTIONS_BUCKET", None)
    env.pop("QUEUE_URL", None)
    return env


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_status_without_bucket_names_variable(bare_env):
    result = run_cli("status", RUN, env=bare_env)

    assert_one_line_error(result, "--predictions-bucket is required", "PREDICTIONS_BUCKET",
                          ".ctr/reports/RUN.json")


def test_status_without_credentials(bare_env):
    result = run_cli("status", RUN, "--predictions-bucket", "ctr-predictions", env=bare_env)

    assert_one_line_error(result, "no complete AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL",
                          ".ctr/reports/RUN.json")


def test_status_with_no_server_at_endpoint(bare_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = dict(bare_env, **aws_environment(endpoint))

    result = run_cli("status", RUN, "--predictions-bucket", "ctr-predictions", env=env)

    assert_one_line_error(result, f"could not connect to S3/SQS at {endpoint}:", "AWS_ENDPOINT_URL")


def test_redrive_without_region(bare_env):
    env = dict(bare_env, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")

    result = run_cli("redrive", RUN, "--queue-url", "http://127.0.0.1:9/000000000000/ctr-scoring", env=env)

    assert_one_line_error(result, "no AWS region configured", "AWS_DEFAULT_REGION")


def test_dispatch_without_credentials(bare_env):
    result = run_cli("dispatch", "--dt", "2026-12-03", "--model-version", "1", "--queue-url",
                     "http://127.0.0.1:9/000000000000/ctr-scoring", "--features-bucket", "ctr-features",
                     "--predictions-bucket", "ctr-predictions", env=dict(bare_env, AWS_DEFAULT_REGION="us-east-1"))

    assert_one_line_error(result, "no complete AWS credentials")


@pytest.mark.integration
def test_status_of_missing_bucket(bare_env, aws_endpoint):
    env = dict(bare_env, **aws_environment(aws_endpoint))

    result = run_cli("status", RUN, "--predictions-bucket", "absent-bucket", env=env)

    assert_one_line_error(result, "NoSuchBucket")
