"""A Kubernetes API server stand-in on 127.0.0.1, for tests and local rehearsals.

It serves the REST paths and JSON shapes of the real API for the objects a
test puts into it, so the official ``kubernetes`` Python client reads them as
it would from a cluster:

- ``GET`` of one object, or a list with an optional ``labelSelector`` of
  ``key=value`` pairs, for core (``/api/v1``) and group (``/apis/G/V``) kinds,
  namespaced or cluster-scoped;
- ``POST`` (create), ``PUT`` (replace), ``PATCH`` (JSON merge patch) and
  ``DELETE``, so that a client can submit ``batch/v1`` Jobs;
- ``GET …/pods/NAME/log`` returns the text set with ``set_pod_log``;
- errors as ``Status`` objects with the real reasons (NotFound, AlreadyExists).

Tests change what the server returns between requests by replacing objects,
or with a reactor: a function called with the stub and the object before each
``GET`` of that object. ``GitOpsSync`` is such a reactor that plays Argo CD:
it renders an overlay from a git branch and reports it synced and healthy.

Run ``python -m ctr.testing.k8s_api --help`` for the command line, which
serves until interrupted and writes a kubeconfig that points at the server.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import subprocess
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import yaml

from ctr.testing.tools import kubectl

logger = logging.getLogger(__name__)

# kind -> plural for the kinds the platform uses; other kinds get "<kind>s".
PLURALS = {
    "Application": "applications", "AppProject": "appprojects", "ConfigMap": "configmaps",
    "CronJob": "cronjobs", "Deployment": "deployments", "Job": "jobs", "Namespace": "namespaces",
    "Pod": "pods", "ReplicaSet": "replicasets", "ScaledObject": "scaledobjects",
    "Secret": "secrets", "Service": "services", "ServiceAccount": "serviceaccounts",
}
CLUSTER_SCOPED = {"Namespace", "NodePool", "EC2NodeClass", "CustomResourceDefinition"}

Reactor = Callable[["KubernetesApiStub", dict], None]


def plural_of(kind: str) -> str:
    return PLURALS.get(kind, kind.lower() + "s")


def _kind_of(plural: str) -> str:
    return next((kind for kind, p in PLURALS.items() if p == plural), plural.rstrip("s").title())


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubernetesApiStub:
    """An in-memory Kubernetes API on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, port: int = 0):
        self._objects: dict[tuple, dict] = {}
        self._reactors: dict[tuple, Reactor] = {}
        self._logs: dict[tuple, str] = {}
        self._lock = threading.RLock()
        self._resource_version = 0
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="k8s-api-stub",
                                        daemon=True)

    # Lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        logger.info("Kubernetes API stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, context: str = "stub") -> Path:
        """Write a kubeconfig whose current context points at this server."""
        document = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "local-stub"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    # Objects ---------------------------------------------------------------------

    def put(self, obj: dict) -> dict:
        """Store (or replace) an object, filling in the metadata the API server would set."""
        obj = copy.deepcopy(obj)
        with self._lock:
            key = self._key_of(obj)
            previous = self._objects.get(key)
            metadata = obj.setdefault("metadata", {})
            metadata.setdefault("uid", (previous or {}).get("metadata", {}).get("uid", str(uuid.uuid4())))
            metadata.setdefault("creationTimestamp", _now())
            metadata.setdefault("generation", 1)
            self._resource_version += 1
            metadata["resourceVersion"] = str(self._resource_version)
            self._objects[key] = obj
        return copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict | None:
        with self._lock:
            found = self._objects.get((api_version, plural_of(kind), namespace, name))
            return copy.deepcopy(found)

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "") -> None:
        with self._lock:
            self._objects.pop((api_version, plural_of(kind), namespace, name), None)

    def set_reactor(self, api_version: str, kind: str, name: str, namespace: str,
                    reactor: Reactor | None) -> None:
        """Call ``reactor(stub, object)`` before each GET of this object (None removes it)."""
        key = (api_version, plural_of(kind), namespace, name)
        with self._lock:
            if reactor is None:
                self._reactors.pop(key, None)
            else:
                self._reactors[key] = reactor

    def set_pod_log(self, namespace: str, pod: str, text: str) -> None:
        with self._lock:
            self._logs[(namespace, pod)] = text

    def _key_of(self, obj: dict) -> tuple:
        kind = obj["kind"]
        namespace = "" if kind in CLUSTER_SCOPED else obj["metadata"].get("namespace", "default")
        return (obj["apiVersion"], plural_of(kind), namespace, obj["metadata"]["name"])

    # Request handling -------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, object]:
        """Serve one request; return the status code and a JSON document (or text for logs)."""
        parsed = urllib.parse.urlparse(raw_path)
        query = urllib.parse.parse_qs(parsed.query)
        self.requests.append((method, parsed.path))
        parts = [p for p in parsed.path.split("/") if p]

        if parts == ["version"]:
            return 200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-stub", "platform": "linux/amd64"}
        if parts[:2] == ["api", "v1"]:
            api_version, rest = "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource {parsed.path}")

        namespace = ""
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return 404, _status(404, "NotFound", f"no resource type in {parsed.path}")
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else ""), (rest[2] if len(rest) > 2 else "")

        if sub == "log" and plural == "pods" and method == "GET":
            with self._lock:
                if (namespace, name) not in self._logs:
                    return 404, _status(404, "NotFound", f'pods "{name}" not found', name, plural)
                return 200, self._logs[(namespace, name)]
        if sub and sub != "status":
            return 404, _status(404, "NotFound", f"subresource {sub} is not served by this stand-in")

        key = (api_version, plural, namespace, name)
        if method == "GET" and name:
            return self._read(key)
        if method == "GET":
            return 200, self._list(api_version, plural, namespace, query.get("labelSelector", [""])[0])
        document = json.loads(body or b"{}")
        if method == "POST" and not name:
            return self._create(api_version, plural, namespace, document)
        if method == "PUT" and name:
            return self._replace(key, document)
        if method == "PATCH" and name:
            return self._patch(key, document)
        if method == "DELETE" and name:
            return self._delete(key)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported on {parsed.path}")

    def _read(self, key: tuple) -> tuple[int, object]:
        with self._lock:
            reactor = self._reactors.get(key)
            if reactor is not None and key in self._objects:
                reactor(self, copy.deepcopy(self._objects[key]))
            found = self._objects.get(key)
            if found is None:
                return 404, _status(404, "NotFound", f'{key[1]} "{key[3]}" not found', key[3], key[1])
            return 200, copy.deepcopy(found)

    def _list(self, api_version: str, plural: str, namespace: str, selector: str) -> dict:
        required = dict(pair.split("=", 1) for pair in selector.split(",") if "=" in pair)
        with self._lock:
            items = [copy.deepcopy(o) for (v, p, ns, _), o in sorted(self._objects.items())
                     if v == api_version and p == plural and (not namespace or ns == namespace)
                     and all(o["metadata"].get("labels", {}).get(k) == val for k, val in required.items())]
            return {"apiVersion": api_version, "kind": f"{_kind_of(plural)}List",
                    "metadata": {"resourceVersion": str(self._resource_version)}, "items": items}

    def _create(self, api_version: str, plural: str, namespace: str, document: dict):
        document.setdefault("apiVersion", api_version)
        document.setdefault("kind", _kind_of(plural))
        document.setdefault("metadata", {})
        if namespace:
            document["metadata"]["namespace"] = namespace
        name = document["metadata"].get("name") or document["metadata"].get("generateName", "obj-") + uuid.uuid4().hex[:5]
        document["metadata"]["name"] = name
        with self._lock:
            if (api_version, plural, namespace, name) in self._objects:
                return 409, _status(409, "AlreadyExists", f'{plural} "{name}" already exists', name, plural)
            return 201, self.put(document)

    def _replace(self, key: tuple, document: dict):
        with self._lock:
            if key not in self._objects:
                return 404, _status(404, "NotFound", f'{key[1]} "{key[3]}" not found', key[3], key[1])
            return 200, self.put(document)

    def _patch(self, key: tuple, patch: dict):
        with self._lock:
            if key not in self._objects:
                return 404, _status(404, "NotFound", f'{key[1]} "{key[3]}" not found', key[3], key[1])
            return 200, self.put(_merge_patch(copy.deepcopy(self._objects[key]), patch))

    def _delete(self, key: tuple):
        with self._lock:
            if self._objects.pop(key, None) is None:
                return 404, _status(404, "NotFound", f'{key[1]} "{key[3]}" not found', key[3], key[1])
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": key[3], "kind": key[1]}}


def _merge_patch(target: object, patch: object) -> object:
    """Apply a JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_patch(target.get(key), value)
    return target


def _status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> dict:
    details = {"name": name, "kind": kind} if name else {}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details, "code": code}


def _handler_for(stub: KubernetesApiStub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                code, document = stub.handle(self.command, self.path, body)
            except Exception as error:  # a real API server returns 500 too, and keeps serving
                logger.exception("stand-in failed on %s %s", self.command, self.path)
                code, document = 500, _status(500, "InternalError", str(error))
            if isinstance(document, str):
                payload, content_type = document.encode(), "text/plain"
            else:
                payload, content_type = json.dumps(document).encode(), "application/json"
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, fmt, *args):
            logger.debug("%s %s", self.address_string(), fmt % args)

    return Handler


# Object shapes ------------------------------------------------------------------------


def argo_application(name: str, namespace: str = "argocd", sync: str = "Synced",
                     health: str = "Healthy", revision: str = "", phase: str = "Succeeded",
                     message: str = "", health_message: str = "") -> dict:
    """Return an Argo CD Application with the status fields ``ctr deploy status`` reads."""
    status = {
        "sync": {"status": sync, "revision": revision},
        "health": {"status": health, **({"message": health_message} if health_message else {})},
        "operationState": {"phase": phase, "message": message, "syncResult": {"revision": revision}},
        "reconciledAt": _now(),
    }
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"project": "ctr", "destination": {"server": "https://kubernetes.default.svc",
                                                        "namespace": "ctr"}},
            "status": status}


def deployment(name: str, namespace: str, image: str, container: str = "worker", replicas: int = 0,
               ready: int | None = None, updated: int | None = None, generation: int = 1,
               observed_generation: int | None = None, old_replicas: int = 0,
               conditions: list[dict] | None = None, template: dict | None = None) -> dict:
    """Return an ``apps/v1`` Deployment with a rollout status.

    ``ready`` and ``updated`` default to ``replicas`` (a finished rollout);
    ``old_replicas`` counts pods of the previous template still running.
    """
    ready = replicas if ready is None else ready
    updated = replicas if updated is None else updated
    template = copy.deepcopy(template) if template else {
        "metadata": {"labels": {"app.kubernetes.io/name": name}},
        "spec": {"containers": [{"name": container, "image": image}]},
    }
    for item in template["spec"]["containers"]:
        if item["name"] == container:
            item["image"] = image
    if conditions is None:
        conditions = [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                      {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": {"replicas": replicas,
                 "selector": {"matchLabels": template["metadata"].get("labels", {})},
                 "template": template},
        "status": {"observedGeneration": generation if observed_generation is None else observed_generation,
                   "replicas": updated + old_replicas, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": min(ready, updated),
                   "conditions": conditions},
    }


# Argo CD stand-in ----------------------------------------------------------------------


class GitOpsSync:
    """Stand-in for Argo CD in one environment: serves the overlay at a branch tip as synced.

    Before each read of the Application it fetches ``branch`` from
    ``repository`` into its own clone and renders ``gitops/overlays/<env>``
    with ``kubectl kustomize``. It then stores the rendered worker Deployment
    with ``replicas`` ready pods, and the Application as Synced and Healthy at
    that commit.
    """

    def __init__(self, repository: str, checkout: Path, environment: str, branch: str = "main",
                 replicas: int = 1, deployment_name: str = "ctr-worker", namespace: str = "ctr"):
        self.repository, self.checkout, self.environment = repository, Path(checkout), environment
        self.branch, self.replicas = branch, replicas
        self.deployment_name, self.namespace = deployment_name, namespace
        self.application = f"ctr-{environment}"

    def install(self, stub: KubernetesApiStub) -> None:
        """Put a placeholder Application into ``stub`` and react to its reads."""
        stub.put(argo_application(self.application, sync="Unknown", health="Missing", phase="Running"))
        stub.set_reactor("argoproj.io/v1alpha1", "Application", self.application, "argocd", self)

    def __call__(self, stub: KubernetesApiStub, application: dict) -> None:
        revision = self._update_checkout()
        rendered = subprocess.run(
            [kubectl(), "kustomize", str(self.checkout / "gitops" / "overlays" / self.environment)],
            capture_output=True, text=True, check=False)
        if rendered.returncode != 0:
            stub.put(argo_application(self.application, sync="OutOfSync", health="Unknown",
                                      revision=revision, phase="Failed",
                                      message=f"kustomize build failed: {rendered.stderr.strip()}"))
            return
        manifests = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        worker = next(d for d in manifests if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == self.deployment_name)
        container = worker["spec"]["template"]["spec"]["containers"][0]
        stub.put(deployment(self.deployment_name, self.namespace, container["image"],
                            container=container["name"], replicas=self.replicas,
                            template=worker["spec"]["template"]))
        stub.put(argo_application(self.application, revision=revision))

    def _update_checkout(self) -> str:
        if not (self.checkout / ".git").exists():
            subprocess.run(["git", "clone", "--quiet", self.repository, str(self.checkout)],
                           check=True, capture_output=True)
        subprocess.run(["git", "-C", str(self.checkout), "fetch", "--quiet", "origin", self.branch],
                       check=True, capture_output=True)
        subprocess.run(["git", "-C", str(self.checkout), "checkout", "--quiet", "--detach", "FETCH_HEAD"],
                       check=True, capture_output=True)
        return subprocess.run(["git", "-C", str(self.checkout), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in until interrupted (SIGINT or SIGTERM)."""
    import signal

    parser = argparse.ArgumentParser(prog="python -m ctr.testing.k8s_api",
                                     description="Serve a Kubernetes API stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig file to write")
    parser.add_argument("--sync-repository", default="",
                        help="git repository (path or URL) whose branch plays the Argo CD source")
    parser.add_argument("--sync-checkout", type=Path, help="folder for the stand-in's own clone")
    parser.add_argument("--environment", default="staging", help="overlay to sync (default: staging)")
    parser.add_argument("--branch", default="main", help="branch to sync (default: main)")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stub = KubernetesApiStub(args.port).start()
    if args.sync_repository:
        checkout = args.sync_checkout or args.kubeconfig.parent / "argocd-checkout"
        GitOpsSync(args.sync_repository, checkout, args.environment, args.branch).install(stub)
    stub.write_kubeconfig(args.kubeconfig)
    print(f"serving {stub.url}; kubeconfig {args.kubeconfig}", flush=True)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    stub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
