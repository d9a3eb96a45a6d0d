"""Fixtures of the worker tests: tiny bundles of two model versions, per-test queues and worker pools."""

from __future__ import annotations

import pytest

from tests.helpers import write_tiny_bundle
from tests.worker.harness import WorkerPool, provision

MODEL_NAME = "tiny"


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict:
    """Bundles of model versions 1 and 2 (different trees), written once per session."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "1": write_tiny_bundle(root / "v1", MODEL_NAME, "1", trees=10, seed=1),
        "2": write_tiny_bundle(root / "v2", MODEL_NAME, "2", trees=12, seed=2),
    }


@pytest.fixture
def infra(s3, sqs):
    """Buckets, a queue and its dead-letter queue (maxReceiveCount 5) for this test only."""
    return provision(s3, sqs)


@pytest.fixture
def pool(tmp_path):
    """Worker processes of this test; every one is stopped at teardown."""
    workers = WorkerPool(tmp_path / "logs")
    yield workers
    workers.stop_all()
