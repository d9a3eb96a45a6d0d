"""Configuration of the SQS inference worker, from environment variables (a ConfigMap in Kubernetes).

==================================  ==========================================================
``QUEUE_URL``                       SQS queue of score requests (required)
``MODEL_SOURCE``                    ``baked`` (default), ``s3`` or ``oci``
``BUNDLE_PATH``                     bundle directory for ``baked`` (default ``/opt/ctr/bundle``)
``BUNDLE_URI``                      ``s3://`` prefix of the bundle for ``s3``
``MODEL_IMAGE``                     ``DIR:TAG`` of an OCI image layout for ``oci``
``MODEL_STORE_URI``                 ``s3://.../models``: bundles of other versions, ``<store>/<name>/<version>/``
``PREDICTIONS_BUCKET``              bucket of the outputs of S3-event runs
``IMAGE_REF``, ``IMAGE_DIGEST``     image tag and digest of this pod, recorded in every output
``WAIT_TIME_SECONDS``               long-polling wait, 0-20 (default 20)
``VISIBILITY_TIMEOUT_SECONDS``      visibility timeout set on receive and by each heartbeat (default 120)
``HEARTBEAT_SECONDS``               interval of visibility extensions, below the timeout (default 30)
``GRACE_SECONDS``                   drain time after SIGTERM, below the pod's grace period (default 50)
``FAILURE_BACKOFF_SECONDS``         visibility timeout of a released failed message, doubled per receive
                                    for S3/SQS and unexpected errors (default 5)
``MAX_PARTITION_SECONDS``           stop extending a message held this long; liveness fails (default 1800)
``MAX_RECEIVE_COUNT``               the redrive policy's maxReceiveCount; 0 reads it from the queue (default 0)
``EXIT_WHEN_IDLE_SECONDS``          exit 0 after this long without messages; 0 never (default 0)
``SCORING_THREADS``                 scoring threads; 0 takes the cgroup CPU quota (default 0)
``PREFETCH``                        1 (default): fetch the next partition and upload the last one while
                                    scoring; 0: fetch, score and upload one partition at a time
``CACHE_DIR``                       where downloaded bundles are cached (default ``$TMPDIR`` or ``/tmp``)
``WORKER_NAME``                     name in logs and outputs (default ``<hostname>-<pid>``)
``METRICS_PORT``                    port of ``/healthz``, ``/readyz``, ``/metrics``; 0 disables (default 8080)
``METRICS_HOST``                    address those endpoints bind (default ``0.0.0.0``)
``SANITY_MIN_MEAN_CTR``             lowest mean predicted CTR of a complete run (default 0.0001)
``SANITY_MAX_MEAN_CTR``             highest mean predicted CTR of a complete run (default 0.5)
``SANITY_MAX_NULL_FRACTION``        highest share of null or NaN predictions (default 0)
``SANITY_MIN_ROWS``                 fewest rows a complete run may have (default 1)
``FAULT_DELAY_BEFORE_WRITE_SECONDS``  fault-injection tests only: pause between scoring and writing
``LOG_LEVEL``, ``LOG_FORMAT``       logging level (default INFO), ``json`` (default) or ``text``
==================================  ==========================================================

AWS credentials come from the pod's identity and the region from ``AWS_REGION``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ctr_inference.errors import CtrError
from ctr_inference.model_source import BAKED, OCI, S3, SOURCES
from ctr_inference.runs import SanityBounds


def _parse_switch(raw: str) -> bool:
    """Parse an on/off setting: 1, true, yes, on or 0, false, no, off (any case).

    Raises:
        ValueError: ``raw`` matches none of these.
    """
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not an on/off value")


# Field annotations are strings under ``from __future__ import annotations``.
_CONVERTERS = {"int": int, "float": float, "str": str, "bool": _parse_switch}

# SQS limits: long polling waits at most 20 s, a visibility timeout is at most 12 hours.
MAX_WAIT_TIME_SECONDS = 20
MAX_VISIBILITY_TIMEOUT_SECONDS = 43200


@dataclass
class WorkerConfig:
    """Worker settings; each field is read from the environment variable of the same name in capitals."""

    queue_url: str
    model_source: str = BAKED
    bundle_path: str = "/opt/ctr/bundle"
    bundle_uri: str = ""
    model_image: str = ""
    model_store_uri: str = ""
    predictions_bucket: str = ""
    image_ref: str = ""
    image_digest: str = ""
    wait_time_seconds: int = 20
    visibility_timeout_seconds: int = 120
    heartbeat_seconds: float = 30.0
    grace_seconds: float = 50.0
    failure_backoff_seconds: int = 5
    max_partition_seconds: float = 1800.0
    max_receive_count: int = 0
    exit_when_idle_seconds: float = 0.0
    scoring_threads: int = 0
    prefetch: bool = True
    cache_dir: str = field(default_factory=lambda: os.environ.get("TMPDIR", "/tmp"))
    worker_name: str = field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    fault_delay_before_write_seconds: float = 0.0
    sanity: SanityBounds = field(default_factory=SanityBounds)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> WorkerConfig:
        """Read and validate the configuration from environment variables.

        Raises:
            CtrError: ``QUEUE_URL`` is missing, a number is not a number, or a value is out of range.
        """
        environ = os.environ if environ is None else environ
        if not environ.get("QUEUE_URL"):
            raise CtrError("QUEUE_URL is not set: the worker needs the URL of its SQS queue")
        values = {}
        for name, spec in cls.__dataclass_fields__.items():
            if name == "sanity":
                continue
            raw = environ.get(name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[name] = _CONVERTERS.get(spec.type, str)(raw)
            except ValueError as error:
                expected = "an on/off value (1 or 0, true or false)" if spec.type == "bool" else "a number"
                raise CtrError(f"{name.upper()}={raw!r} is not {expected}") from error
        config = cls(sanity=SanityBounds.from_env(environ), **values)
        config.validate()
        return config

    def validate(self) -> None:
        """Check values that SQS or the shutdown logic cannot work with.

        Raises:
            CtrError: naming the variable, its value and the allowed range.
        """
        if self.model_source not in SOURCES:
            raise CtrError(f"MODEL_SOURCE={self.model_source!r} is unknown, expected one of {', '.join(SOURCES)}")
        if self.model_source == S3 and not self.bundle_uri:
            raise CtrError("MODEL_SOURCE=s3 needs BUNDLE_URI, the s3:// prefix of the bundle")
        if self.model_source == OCI and not self.model_image:
            raise CtrError("MODEL_SOURCE=oci needs MODEL_IMAGE, DIR:TAG of an OCI image layout")
        if not 0 <= self.wait_time_seconds <= MAX_WAIT_TIME_SECONDS:
            raise CtrError(f"WAIT_TIME_SECONDS={self.wait_time_seconds} is outside 0-{MAX_WAIT_TIME_SECONDS}")
        if not 1 <= self.visibility_timeout_seconds <= MAX_VISIBILITY_TIMEOUT_SECONDS:
            raise CtrError(f"VISIBILITY_TIMEOUT_SECONDS={self.visibility_timeout_seconds} is outside "
                           f"1-{MAX_VISIBILITY_TIMEOUT_SECONDS}")
        if not 0 < self.heartbeat_seconds < self.visibility_timeout_seconds:
            raise CtrError(f"HEARTBEAT_SECONDS={self.heartbeat_seconds} must be above 0 and below "
                           f"VISIBILITY_TIMEOUT_SECONDS={self.visibility_timeout_seconds}, or a held "
                           "message becomes visible between two heartbeats")
        if self.grace_seconds < 0 or self.failure_backoff_seconds < 0 or self.max_partition_seconds <= 0:
            raise CtrError("GRACE_SECONDS and FAILURE_BACKOFF_SECONDS must be 0 or more, "
                           "MAX_PARTITION_SECONDS above 0")
        if self.failure_backoff_seconds > MAX_VISIBILITY_TIMEOUT_SECONDS:
            raise CtrError(f"FAILURE_BACKOFF_SECONDS={self.failure_backoff_seconds} is above "
                           f"{MAX_VISIBILITY_TIMEOUT_SECONDS}")
        if not 0 <= self.metrics_port <= 65535:
            raise CtrError(f"METRICS_PORT={self.metrics_port} is not a TCP port (0 disables the endpoints)")

    @property
    def bundle_location(self) -> str:
        return {BAKED: self.bundle_path, S3: self.bundle_uri, OCI: self.model_image}[self.model_source]
