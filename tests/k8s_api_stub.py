"""A small Kubernetes API stand-in on 127.0.0.1 for batch/v1 Jobs, their pods and pod logs.

It serves the requests the training Job submitter makes, in the real API's
JSON shapes (objects, lists and ``Status`` errors). It also plays the
kubelet, so a created Job gets one pod whose container command runs as a
local child process. The process's output is the pod log (``follow=true`` streams it
with chunked transfer encoding), and its exit code becomes the container's
``terminated.exitCode`` and the Job's ``Complete`` or ``Failed`` condition.
``spec.activeDeadlineSeconds`` is enforced like the Job controller does
(``DeadlineExceeded``), and deleting a Job kills its process.

Served paths:

    POST   /apis/batch/v1/namespaces/{ns}/jobs
    GET    /apis/batch/v1/namespaces/{ns}/jobs[/{name}[/status]]
    DELETE /apis/batch/v1/namespaces/{ns}/jobs/{name}
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=job-name=NAME
    GET    /api/v1/namespaces/{ns}/pods/{name}[/log]
    GET    /version
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlparse

LOOPBACK = "127.0.0.1"
CONTAINER_START_DELAY = 0.2


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_error(code: int, reason: str, message: str, kind: str = "", name: str = "", group: str = "") -> dict:
    """A ``Status`` object as the API server returns it for a failed request."""
    details = {k: v for k, v in (("name", name), ("group", group), ("kind", kind)) if v}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}


class _Pod:
    """One pod of a Job and the local process that plays its single container."""

    def __init__(self, job: dict, namespace: str):
        template = job["spec"]["template"]
        suffix = secrets.token_hex(3)[:5]
        job_name = job["metadata"]["name"]
        self.name = f"{job_name}-{suffix}"
        self.container = template["spec"]["containers"][0]
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels.update({"job-name": job_name, "batch.kubernetes.io/job-name": job_name,
                       "controller-uid": job["metadata"]["uid"],
                       "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]})
        self.object = {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": namespace, "uid": str(uuid.uuid4()),
                         "labels": labels, "creationTimestamp": _now(), "resourceVersion": "1",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                              "uid": job["metadata"]["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": template["spec"],
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True",
                                                           "lastTransitionTime": _now()}],
                       "qosClass": "BestEffort"},
        }
        self.log = bytearray()
        self.finished = False
        self.changed = threading.Condition()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = list(self.container.get("command") or []) + list(self.container.get("args") or [])
        environment = {item["name"]: item.get("value", "") for item in self.container.get("env") or []}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.container.get("workingDir"),
            env=dict(os.environ, **environment), start_new_session=True,
        )
        started = _now()
        self.object["status"].update(
            phase="Running", startTime=started, podIP="10.0.0.10",
            containerStatuses=[{"name": self.container["name"], "image": self.container["image"],
                                "imageID": "", "ready": True, "restartCount": 0, "started": True,
                                "state": {"running": {"startedAt": started}}}],
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for chunk in iter(lambda: self.process.stdout.readline(), b""):
            with self.changed:
                self.log.extend(chunk)
                self.changed.notify_all()
        code = self.process.wait()
        self.terminate(code, "Completed" if code == 0 else "Error")

    def terminate(self, exit_code: int, reason: str) -> None:
        with self.changed:
            if self.finished:
                return
            status = self.object["status"]
            started = status.get("startTime", _now())
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            for container in status.get("containerStatuses", []):
                container["ready"] = False
                container["started"] = False
                container["state"] = {"terminated": {"exitCode": exit_code, "reason": reason,
                                                     "startedAt": started, "finishedAt": _now(),
                                                     "containerID": f"containerd://{uuid.uuid4().hex}"}}
            self.finished = True
            self.changed.notify_all()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class KubernetesApiStub:
    """The stand-in server; ``url`` is the API server address for a kubernetes client Configuration."""

    def __init__(self):
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def start(self) -> KubernetesApiStub:
        self.thread.start()
        return self

    def stop(self) -> None:
        for pod in list(self.pods.values()):
            pod.kill()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Job lifecycle ---------------------------------------------------------

    def create_job(self, namespace: str, body: dict) -> tuple[int, dict]:
        metadata = body.get("metadata") or {}
        name = metadata.get("name") or ""
        if not name and metadata.get("generateName"):
            name = metadata["generateName"] + secrets.token_hex(3)[:5]
        containers = ((body.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        restart = body.get("spec", {}).get("template", {}).get("spec", {}).get("restartPolicy")
        problems = []
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name or "-") or len(name) > 63:
            problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 label must consist "
                            "of lower case alphanumeric characters or '-'")
        if not containers:
            problems.append("spec.template.spec.containers: Required value")
        if restart not in ("Never", "OnFailure"):
            problems.append(f"spec.template.spec.restartPolicy: Unsupported value: {restart!r}: supported "
                            'values: "OnFailure", "Never"')
        if problems:
            return 422, status_error(422, "Invalid", f'Job.batch "{name}" is invalid: ' + "; ".join(problems),
                                     kind="Job", name=name, group="batch")
        with self.lock:
            if (namespace, name) in self.jobs:
                return 409, status_error(409, "AlreadyExists", f'jobs.batch "{name}" already exists',
                                         kind="jobs", name=name, group="batch")
            job = json.loads(json.dumps(body))
            job.setdefault("apiVersion", "batch/v1")
            job.setdefault("kind", "Job")
            job["metadata"].update(name=name, namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1",
                                   creationTimestamp=_now(), generation=1)
            job["spec"].setdefault("backoffLimit", 6)
            job["spec"].setdefault("completions", 1)
            job["spec"].setdefault("parallelism", 1)
            job["status"] = {"startTime": _now(), "active": 1, "ready": 0, "terminating": 0,
                             "uncountedTerminatedPods": {}}
            self.jobs[(namespace, name)] = job
            pod = _Pod(job, namespace)
            self.pods[(namespace, pod.name)] = pod
        threading.Thread(target=self._run, args=(namespace, name, pod), daemon=True).start()
        return 201, job

    def _run(self, namespace: str, name: str, pod: _Pod) -> None:
        time.sleep(CONTAINER_START_DELAY)
        job = self.jobs.get((namespace, name))
        if job is None:
            return
        try:
            pod.start()
        except OSError as error:
            pod.log.extend(f"failed to start container: {error}\n".encode())
            pod.terminate(128, "StartError")
        job["status"]["ready"] = 1
        deadline = job["spec"].get("activeDeadlineSeconds")
        started = time.monotonic()
        while not pod.finished:
            if (namespace, name) not in self.jobs:
                return
            if deadline and time.monotonic() - started > deadline:
                pod.kill()
                pod.terminate(137, "Error")
                self._finish(job, False, "DeadlineExceeded", "Job was active longer than specified deadline")
                return
            time.sleep(0.05)
        succeeded = pod.object["status"]["phase"] == "Succeeded"
        if succeeded:
            self._finish(job, True, "CompletionsReached", "Reached expected number of succeeded pods")
        else:
            self._finish(job, False, "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def _finish(self, job: dict, succeeded: bool, reason: str, message: str) -> None:
        with self.lock:
            status = job["status"]
            if status.get("conditions"):
                return
            now = _now()
            condition = {"status": "True", "reason": reason, "message": message, "lastProbeTime": now,
                         "lastTransitionTime": now}
            status.update(active=0, ready=0)
            if succeeded:
                status["succeeded"] = 1
                status["completionTime"] = now
                status["conditions"] = [dict(condition, type="SuccessCriteriaMet"), dict(condition, type="Complete")]
            else:
                status["failed"] = 1
                status["conditions"] = [dict(condition, type="FailureTarget"), dict(condition, type="Failed")]
            job["metadata"]["resourceVersion"] = str(int(job["metadata"]["resourceVersion"]) + 1)

    def delete_job(self, namespace: str, name: str) -> tuple[int, dict]:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                return 404, status_error(404, "NotFound", f'jobs.batch "{name}" not found', kind="jobs",
                                         name=name, group="batch")
            owned = [key for key, pod in self.pods.items()
                     if key[0] == namespace and pod.object["metadata"]["labels"].get("job-name") == name]
            for key in owned:
                pod = self.pods.pop(key)
                pod.kill()
                pod.terminate(137, "Error")
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": name, "group": "batch", "kind": "jobs", "uid": job["metadata"]["uid"]}}

    # HTTP ------------------------------------------------------------------

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _send(self, code: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_POST(self):
                stub.requests.append(("POST", self.path))
                match = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs", urlparse(self.path).path)
                if not match:
                    return self._send(404, status_error(404, "NotFound", "the server could not find the requested resource"))
                self._send(*stub.create_job(match.group(1), self._body()))

            def do_DELETE(self):
                stub.requests.append(("DELETE", self.path))
                self._body()
                match = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)", urlparse(self.path).path)
                if not match:
                    return self._send(404, status_error(404, "NotFound", "the server could not find the requested resource"))
                self._send(*stub.delete_job(match.group(1), match.group(2)))

            def do_GET(self):
                stub.requests.append(("GET", self.path))
                url = urlparse(self.path)
                query = parse_qs(url.query)
                path = url.path
                if path == "/version":
                    return self._send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-stub",
                                            "platform": "linux/amd64"})
                match = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?", path)
                if match:
                    namespace, name, _ = match.groups()
                    if name is None:
                        items = [j for (ns, _), j in stub.jobs.items() if ns == namespace]
                        return self._send(200, {"kind": "JobList", "apiVersion": "batch/v1",
                                                "metadata": {"resourceVersion": "1"}, "items": items})
                    job = stub.jobs.get((namespace, name))
                    if job is None:
                        return self._send(404, status_error(404, "NotFound", f'jobs.batch "{name}" not found',
                                                            kind="jobs", name=name, group="batch"))
                    return self._send(200, job)
                match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?", path)
                if match:
                    namespace, name, log = match.groups()
                    if name is None:
                        return self._send(200, self._pod_list(namespace, query.get("labelSelector", [""])[0]))
                    pod = stub.pods.get((namespace, name))
                    if pod is None:
                        return self._send(404, status_error(404, "NotFound", f'pods "{name}" not found',
                                                            kind="pods", name=name))
                    if log:
                        return self._stream_log(pod, query.get("follow", ["false"])[0] == "true")
                    return self._send(200, pod.object)
                self._send(404, status_error(404, "NotFound", "the server could not find the requested resource"))

            def _pod_list(self, namespace: str, selector: str) -> dict:
                selector_labels = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
                items = [pod.object for (ns, _), pod in stub.pods.items() if ns == namespace and all(
                    pod.object["metadata"]["labels"].get(k) == v for k, v in selector_labels.items())]
                return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}

            def _stream_log(self, pod: _Pod, follow: bool) -> None:
                if pod.process is None and not pod.finished:
                    message = (f'container "{pod.container["name"]}" in pod "{pod.name}" is waiting to start: '
                               "ContainerCreating")
                    return self._send(400, status_error(400, "BadRequest", message))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                while True:
                    with pod.changed:
                        while follow and sent == len(pod.log) and not pod.finished:
                            pod.changed.wait(0.5)
                        chunk = bytes(pod.log[sent:])
                        done = pod.finished or not follow
                    if chunk:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                        sent += len(chunk)
                    if done and sent == len(pod.log):
                        break
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler
