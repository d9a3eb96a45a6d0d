"""Local stand-ins for the production services, run as child processes on 127.0.0.1.

- ``MotoServer``: S3 and SQS (the moto server), in memory: it keeps nothing after it stops.
- ``MlflowServer``: MLflow tracking with a SQLite store and proxied local artifacts.

Each service writes its log to a file, is started with a readiness check and
stopped with SIGTERM (SIGKILL after a timeout), also when the caller fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Self

from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"


class ServiceError(CtrError):
    """A local service could not start."""


def free_port() -> int:
    """Return a TCP port on loopback that is free right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def check_port_free(port: int, service: str) -> None:
    """Raise a clear error when ``port`` on loopback is already taken."""
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError as error:
            raise ServiceError(
                f"port {port} on {LOOPBACK} is already in use, so {service} cannot start; "
                "stop what uses it or choose another port"
            ) from error


def _venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


class LocalService:
    """A child process serving HTTP on loopback."""

    name = "service"

    def __init__(self, port: int | None, log_dir: Path):
        self.port = port or free_port()
        self.log_path = Path(log_dir) / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 120.0) -> Self:
        """Start the process and wait until it responds.

        Raises:
            ServiceError: the port is taken, the process exits, or it does not respond in time.
        """
        check_port_free(self.port, self.name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the log's file descriptor, so this one can close.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(),
                start_new_session=True,
            )
        logger.info("starting %s on %s (pid %d, log %s)", self.name, self.url, self.process.pid, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise ServiceError(f"{self.name} exited with code {self.process.returncode}; log tail:\n{tail}")
            if self.ready():
                logger.info("%s is ready on %s", self.name, self.url)
                return self
            time.sleep(0.3)
        self.stop()
        raise ServiceError(f"{self.name} did not respond on {self.url} within {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s, killing it", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        logger.info("stopped %s (pid %d)", self.name, self.process.pid)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except OSError:
        return False


class MotoServer(LocalService):
    """S3 and SQS through the moto server."""

    name = "moto"

    def command(self) -> list[str]:
        return [_venv_bin("moto_server"), "-H", LOOPBACK, "-p", str(self.port)]

    def ready(self) -> bool:
        return _http_ok(f"{self.url}/moto-api/")


class MlflowServer(LocalService):
    """MLflow tracking: SQLite store and artifacts under ``root``, one worker process."""

    name = "mlflow"

    def __init__(self, port: int | None, log_dir: Path, root: Path):
        super().__init__(port, log_dir)
        self.root = Path(root)

    def command(self) -> list[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        return [
            _venv_bin("mlflow"), "server",
            "--host", LOOPBACK, "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root.resolve() / 'mlflow.db'}",
            "--artifacts-destination", str((self.root / "artifacts").resolve()),
            "--serve-artifacts",
        ]

    def environment(self) -> dict:
        # The job runner would start extra processes and memory; nothing here uses it.
        return dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")

    def ready(self) -> bool:
        return _http_ok(f"{self.url}/health")


def aws_environment(endpoint: str) -> dict:
    """Environment variables that point boto3 (and the worker) at a local S3/SQS endpoint."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
