"""The training run as a Kubernetes Job: ``dvc repro`` inside the training image, on the training nodes.

``TrainingJobRunner.run`` creates a batch/v1 Job with the ``kubernetes``
client, waits for its pod, streams the pod's log line by line, and waits for
the Job's ``Complete`` or ``Failed`` condition. It returns the container's
exit code and the MLflow run id that the train stage prints
(``CTR_MLFLOW_RUN_ID=<id>``). A failed Job raises ``TrainingJobFailedError``
with the exit code. A Job that does not finish in time is deleted, and
``TrainingJobTimeoutError`` is raised.

The pipeline changes files that git tracks (``dvc.lock``, ``models/run.json``,
``metrics/``, ``plots/``), and they are lost with the pod. So the default
command prints each of them as one ``CTR_FILE <path> <base64>`` log line, and
the runner returns them for the caller to write into its checkout and commit.

The Job never retries (``backoffLimit: 0``): a failed training run is
reported, not repeated. ``activeDeadlineSeconds`` bounds the run on the
cluster side too, so a lost submitter cannot leave a run going forever.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

CONTAINER = "train"
RUN_ID_MARKER = "CTR_MLFLOW_RUN_ID="
FILE_MARKER = "CTR_FILE "
# The files that `dvc repro` changes and git tracks, sent back through the log.
RETURNED_FILES = "dvc.lock models/run.json metrics/*.json plots/*.json"
DEFAULT_COMMAND = ["/bin/sh", "-ec", "\n".join([
    "dvc pull -r s3 --allow-missing",
    "dvc repro",
    "dvc push -r s3",
    f'for f in {RETURNED_FILES}; do [ -f "$f" ] && echo "{FILE_MARKER}$f $(base64 -w0 "$f")"; done; true',
])]
# Karpenter's training NodePool gives its nodes this label and a GPU taint.
TRAINING_NODE_SELECTOR = {"ctr.ai/workload": "training"}
TRAINING_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
_RUN_ID = re.compile(re.escape(RUN_ID_MARKER) + r"([0-9a-f]{32})")


class TrainingJobError(CtrError):
    """The training Job could not be created, failed, or did not finish in time."""


class TrainingJobFailedError(TrainingJobError):
    """The training Job finished with a failed pod; ``result.exit_code`` is the container's exit code."""

    def __init__(self, result: JobResult):
        code = "unknown" if result.exit_code is None else result.exit_code
        super().__init__(f"training job {result.namespace}/{result.name} failed: {result.reason}, "
                         f"exit code {code}; its log is above")
        self.result = result


class TrainingJobTimeoutError(TrainingJobError):
    """The training Job did not finish within the timeout and was deleted."""


@dataclass
class TrainingJobSpec:
    """The image, command, environment and node placement of a training Job."""

    name: str
    image: str
    command: list[str] = field(default_factory=lambda: list(DEFAULT_COMMAND))
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    service_account: str | None = "ctr-training"
    node_selector: dict[str, str] = field(default_factory=lambda: dict(TRAINING_NODE_SELECTOR))
    tolerations: list[dict] = field(default_factory=lambda: [dict(t) for t in TRAINING_TOLERATIONS])
    cpu: str = "8"
    memory: str = "32Gi"
    active_deadline_seconds: int = 6 * 3600
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    labels: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> dict:
        """Return the batch/v1 Job object."""
        labels = {"app.kubernetes.io/name": "ctr-training", "app.kubernetes.io/component": "training",
                  **self.labels}
        container = {
            "name": CONTAINER,
            "image": self.image,
            "command": list(self.command),
            "env": [{"name": k, "value": v} for k, v in sorted(self.env.items())],
            "resources": {"requests": {"cpu": self.cpu, "memory": self.memory},
                          "limits": {"memory": self.memory}},
        }
        if self.working_dir:
            container["workingDir"] = self.working_dir
        pod_spec = {
            "restartPolicy": "Never",
            "containers": [container],
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": self.active_deadline_seconds,
                "ttlSecondsAfterFinished": self.ttl_seconds_after_finished,
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }


@dataclass
class JobResult:
    """The outcome of a training Job."""

    name: str
    namespace: str
    succeeded: bool
    exit_code: int | None
    run_id: str | None
    reason: str
    log_lines: int = 0
    files: dict[str, bytes] = field(default_factory=dict)


def parse_file_line(line: str) -> tuple[str, bytes] | None:
    """Return (path, content) from a ``CTR_FILE <path> <base64>`` log line, or None for other lines.

    Only relative paths inside the checkout are accepted, so a log line cannot
    make the caller write elsewhere.
    """
    import base64
    import binascii
    from pathlib import PurePosixPath

    if not line.startswith(FILE_MARKER):
        return None
    path, _, encoded = line[len(FILE_MARKER):].partition(" ")
    parts = PurePosixPath(path).parts
    if not path or PurePosixPath(path).is_absolute() or ".." in parts:
        logger.warning("ignoring returned file with an unsafe path %r", path)
        return None
    try:
        return path, base64.b64decode(encoded, validate=True)
    except binascii.Error:
        logger.warning("ignoring returned file %s: its content is not valid base64", path)
        return None


def find_run_id(line: str) -> str | None:
    """Return the MLflow run id in a ``CTR_MLFLOW_RUN_ID=<id>`` log line, or None."""
    match = _RUN_ID.search(line)
    return match.group(1) if match else None


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0


def _job_finished(job) -> tuple[bool, bool, str]:
    """Return (finished, succeeded, reason) from a Job's status conditions and counters."""
    status = job.status
    for condition in status.conditions or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed"):
            return True, condition.type == "Complete", condition.reason or condition.type
    if status.succeeded:
        return True, True, "Complete"
    if status.failed:
        return True, False, "Failed"
    return False, False, ""


def _exit_code(pod) -> int | None:
    for container in (pod.status.container_statuses or []) if pod else []:
        if container.name == CONTAINER and container.state and container.state.terminated:
            return container.state.terminated.exit_code
    return None


class TrainingJobRunner:
    """Submits a training Job and follows it through one ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client, namespace: str, poll_seconds: float = 2.0,
                 log_sink: Callable[[str], None] | None = None):
        from kubernetes import client

        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self.log_sink = log_sink or (lambda line: print(line, flush=True))

    def run(self, spec: TrainingJobSpec, timeout: float) -> JobResult:
        """Create the Job, stream its log, wait for it to finish and return the result.

        Raises:
            TrainingJobFailedError: the Job failed (the result carries the exit code).
            TrainingJobTimeoutError: ``timeout`` seconds passed; the Job was deleted.
            TrainingJobError: the API server rejected the Job.
        """
        from kubernetes.client.exceptions import ApiException

        deadline = _Deadline(timeout)
        try:
            self.batch.create_namespaced_job(self.namespace, spec.manifest(), _request_timeout=30)
        except ApiException as error:
            raise TrainingJobError(f"creating job {self.namespace}/{spec.name} failed: "
                                   f"HTTP {error.status} {error.reason}: {error.body}") from error
        logger.info("created training job %s/%s (image %s)", self.namespace, spec.name, spec.image)
        try:
            pod_name = self._wait_for_pod(spec.name, deadline)
            run_id, lines, files = self._stream_log(spec.name, pod_name, deadline)
            succeeded, reason = self._wait_for_job(spec.name, deadline)
        except TrainingJobTimeoutError:
            self._delete(spec.name)
            raise
        pod = self._read_pod(pod_name)
        result = JobResult(spec.name, self.namespace, succeeded, _exit_code(pod), run_id, reason, lines, files)
        logger.info("training job %s/%s finished: %s, exit code %s, MLflow run %s", self.namespace, spec.name,
                    reason, result.exit_code, run_id)
        if not succeeded:
            raise TrainingJobFailedError(result)
        return result

    def _timeout(self, name: str, deadline: _Deadline, waiting_for: str) -> TrainingJobTimeoutError:
        return TrainingJobTimeoutError(f"training job {self.namespace}/{name} did not finish within "
                                       f"{deadline.seconds:.0f} s (while waiting for {waiting_for}); "
                                       "the job was deleted")

    def _wait_for_pod(self, name: str, deadline: _Deadline) -> str:
        """Wait until the Job's pod has started (or already ended) and return its name."""
        while True:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}",
                                                 _request_timeout=30).items
            for pod in pods:
                if pod.status and pod.status.phase in ("Running", "Succeeded", "Failed"):
                    logger.info("training pod %s is %s", pod.metadata.name, pod.status.phase)
                    return pod.metadata.name
            if deadline.passed():
                raise self._timeout(name, deadline, "its pod to start")
            time.sleep(min(self.poll_seconds, max(deadline.remaining(), 0.05)))

    def _stream_log(self, name: str, pod_name: str, deadline: _Deadline) -> tuple[str | None, int, dict]:
        """Pass each log line to the sink until the container exits.

        Returns the last run id seen, the line count and the returned files.
        """
        import urllib3

        state = {"run_id": None, "count": 0, "files": {}}
        pending = b""
        try:
            response = self.core.read_namespaced_pod_log(
                pod_name, self.namespace, container=CONTAINER, follow=True, _preload_content=False,
                _request_timeout=(30, max(deadline.remaining(), 0.1)),
            )
            for chunk in response.stream(4096, decode_content=True):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._take_line(raw, state)
                if deadline.passed():
                    raise self._timeout(name, deadline, "the log to end")
            response.release_conn()
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as error:
            if deadline.passed():
                raise self._timeout(name, deadline, "the log to end") from error
            # NOTE: a dropped log stream is not resumed, because the client has no
            # sinceTime. Lines after the drop are missing here, but the outcome is awaited.
            logger.warning("log stream of pod %s ended early: %s", pod_name, error)
        if pending:
            self._take_line(pending, state)
        return state["run_id"], state["count"], state["files"]

    def _take_line(self, raw: bytes, state: dict) -> None:
        line = raw.decode("utf-8", errors="replace")
        state["count"] += 1
        returned = parse_file_line(line)
        if returned:
            path, content = returned
            state["files"][path] = content
            self.log_sink(f"(returned {path}, {len(content)} bytes)")
            return
        state["run_id"] = find_run_id(line) or state["run_id"]
        self.log_sink(line)

    def _wait_for_job(self, name: str, deadline: _Deadline) -> tuple[bool, str]:
        while True:
            job = self.batch.read_namespaced_job_status(name, self.namespace, _request_timeout=30)
            finished, succeeded, reason = _job_finished(job)
            if finished:
                return succeeded, reason
            if deadline.passed():
                raise self._timeout(name, deadline, "the job to complete")
            time.sleep(min(self.poll_seconds, max(deadline.remaining(), 0.05)))

    def _read_pod(self, pod_name: str):
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_pod(pod_name, self.namespace, _request_timeout=30)
        except ApiException as error:
            logger.warning("reading pod %s failed (HTTP %s); its exit code is unknown", pod_name, error.status)
            return None

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background",
                                             _request_timeout=30)
            logger.warning("deleted training job %s/%s after the timeout", self.namespace, name)
        except ApiException as error:
            logger.error("deleting training job %s/%s failed: HTTP %s %s", self.namespace, name, error.status,
                         error.reason)


def api_client(kubeconfig: str = "", context: str = ""):
    """Return a ``kubernetes.client.ApiClient`` from a kubeconfig, or from the pod's service account.

    The kubeconfig is ``kubeconfig`` if given, else ``$KUBECONFIG`` or
    ``~/.kube/config`` when one exists; inside a pod without a kubeconfig the
    in-cluster configuration is used.

    Raises:
        TrainingJobError: no configuration is available.
    """
    import os
    from pathlib import Path

    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    candidates = [kubeconfig] if kubeconfig else [
        *os.environ.get("KUBECONFIG", "").split(os.pathsep), str(Path.home() / ".kube" / "config")]
    path = next((c for c in candidates if c and Path(c).is_file()), "")
    try:
        if path:
            return config.new_client_from_config(config_file=path, context=context or None)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
    except ConfigException as error:
        raise TrainingJobError(f"the Kubernetes configuration {path or 'in-cluster'} is invalid: {error}") from error
    raise TrainingJobError("no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, "
                           "or run inside a pod with a service account")


def job_name(git_commit: str, now: float | None = None) -> str:
    """Return ``ctr-train-<short sha>-<seconds in base 36>``, unique per second and a valid DNS label."""
    seconds = int(now if now is not None else time.time())
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    encoded = ""
    while seconds:
        seconds, remainder = divmod(seconds, 36)
        encoded = digits[remainder] + encoded
    short = re.sub(r"[^0-9a-z]", "", git_commit.lower())[:7] or "unknown"
    return f"ctr-train-{short}-{encoded or '0'}"
