"""The rollout state of an environment, read from the Kubernetes API.

Two objects show whether a promotion is live. The Argo CD Application
(``argoproj.io/v1alpha1``) reports its sync status, health and last
operation. The worker Deployment it syncs reports the image of its pod
template and how many replicas run that template and are ready. KEDA may have
scaled the Deployment to zero between batches, so its rollout is complete as
soon as the template carries the image, unless ``min_ready`` requires running
pods.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ctr.deploy.errors import ClusterUnreachableError, DeployError

logger = logging.getLogger(__name__)

HEALTHY = "healthy"
PROGRESSING = "progressing"
DEGRADED = "degraded"

# Exit codes of `ctr deploy status`; 1 is every other error (including an
# unreachable API) and 2 a usage error, as for every ctr command.
EXIT_CODES = {HEALTHY: 0, DEGRADED: 3, PROGRESSING: 4}


@dataclass(frozen=True)
class Target:
    """Names of the objects that show an environment's rollout in its cluster."""

    application: str
    argocd_namespace: str = "argocd"
    namespace: str = "ctr"
    deployment: str = "ctr-worker"
    container: str = "worker"


@dataclass(frozen=True)
class RolloutState:
    """One reading of an environment: a state (healthy, progressing, degraded) and why."""

    state: str
    message: str
    sync_status: str = ""
    health_status: str = ""
    revision: str = ""
    image: str = ""
    replicas: int = 0
    ready_replicas: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]


class ClusterReader:
    """Reads the Application and the Deployment through a ``kubernetes.client.ApiClient``.

    ``connect`` returns a new ApiClient; it is called again after
    ``reconnect_after`` seconds, because EKS tokens expire after 15 minutes.
    """

    def __init__(self, connect, request_timeout: float = 10.0, reconnect_after: float = 600.0,
                 clock=time.monotonic):
        self._connect, self._timeout = connect, request_timeout
        self._reconnect_after, self._clock = reconnect_after, clock
        self._connected_at = None
        self._reconnect()

    def _reconnect(self) -> None:
        from kubernetes import client

        self._api_client = self._connect()
        self._custom = client.CustomObjectsApi(self._api_client)
        self._apps = client.AppsV1Api(self._api_client)
        self._host = self._api_client.configuration.host
        self._connected_at = self._clock()

    def application(self, target: Target) -> dict | None:
        if self._clock() - self._connected_at > self._reconnect_after:
            self._reconnect()
        return self._read(lambda: self._custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", target.argocd_namespace, "applications", target.application,
            _request_timeout=self._timeout))

    def deployment(self, target: Target) -> dict | None:
        def read():
            deployment = self._apps.read_namespaced_deployment(
                target.deployment, target.namespace, _request_timeout=self._timeout)
            return self._api_client.sanitize_for_serialization(deployment)

        return self._read(read)

    def _read(self, call) -> dict | None:
        """Run one API call and return its result, or None for 404 Not Found.

        Raises:
            ClusterUnreachableError: no connection, or the server returned an error status.
        """
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as error:
            if error.status == 404:
                return None
            raise ClusterUnreachableError(
                f"the Kubernetes API at {self._host} returned {error.status} {error.reason}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterUnreachableError(
                f"cannot reach the Kubernetes API at {self._host}: {_reason(error)}") from error


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def assess(application: dict | None, deployment: dict | None, target: Target,
           expected_image: str = "", expected_revision: str = "", min_ready: int = 0) -> RolloutState:
    """Classify one reading of the Application and the Deployment.

    Degraded means the rollout failed and waiting will not help: the sync
    operation failed, Argo CD reports the application Degraded, or the
    Deployment exceeded its progress deadline. Anything not yet finished is
    progressing.

    Raises:
        DeployError: the Application does not exist.
    """
    if application is None:
        raise DeployError(f"Argo CD Application {target.argocd_namespace}/{target.application} "
                          "does not exist; is this the right cluster and environment?")
    status = application.get("status") or {}
    sync = (status.get("sync") or {}).get("status", "Unknown")
    revision = (status.get("sync") or {}).get("revision", "")
    health = (status.get("health") or {}).get("status", "Unknown")
    operation = status.get("operationState") or {}
    facts = {"sync_status": sync, "health_status": health, "revision": revision}

    if operation.get("phase") in ("Failed", "Error"):
        return RolloutState(DEGRADED, f"the last sync {operation['phase'].lower()}: "
                            f"{operation.get('message', 'no message')}", **facts)
    if health == "Degraded":
        message = (status.get("health") or {}).get("message") or "a resource is degraded"
        return RolloutState(DEGRADED, f"Argo CD reports the application Degraded: {message}", **facts)
    if expected_revision and not revision.startswith(expected_revision):
        return RolloutState(PROGRESSING, f"Argo CD is at revision {revision[:10] or 'none'}, "
                            f"waiting for {expected_revision[:10]}", **facts)
    if sync != "Synced":
        return RolloutState(PROGRESSING, f"application is {sync} at revision {revision[:10]}", **facts)
    if health != "Healthy":
        return RolloutState(PROGRESSING, f"application health is {health}", **facts)
    if deployment is None:
        return RolloutState(PROGRESSING, f"Deployment {target.namespace}/{target.deployment} does "
                            "not exist yet", **facts)
    return _assess_deployment(deployment, target, expected_image, min_ready, facts)


def _assess_deployment(deployment: dict, target: Target, expected_image: str, min_ready: int,
                       facts: dict) -> RolloutState:
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    image = next((c.get("image", "") for c in containers if c.get("name") == target.container), "")
    desired = int(spec.get("replicas") or 0)
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    facts = dict(facts, image=image, replicas=desired, ready_replicas=ready)
    name = f"{target.namespace}/{target.deployment}"

    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return RolloutState(DEGRADED, f"Deployment {name} exceeded its progress deadline: "
                                f"{condition.get('message', '')}", **facts)
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return RolloutState(DEGRADED, f"Deployment {name} cannot create pods: "
                                f"{condition.get('message', '')}", **facts)
    if not image:
        raise DeployError(f"Deployment {name} has no container named {target.container}")
    if expected_image and image != expected_image:
        return RolloutState(PROGRESSING, f"Deployment {name} runs {image}, waiting for "
                            f"{expected_image}", **facts)
    if int(status.get("observedGeneration") or 0) < int(deployment["metadata"].get("generation") or 0):
        return RolloutState(PROGRESSING, f"Deployment {name}: the controller has not observed the "
                            "latest template yet", **facts)
    if updated < desired or total > updated or available < desired or ready < desired:
        return RolloutState(PROGRESSING, f"Deployment {name}: {updated} of {desired} replicas "
                            f"updated, {ready} ready, {total - updated} old ones left", **facts)
    if ready < min_ready:
        return RolloutState(PROGRESSING, f"Deployment {name}: {ready} ready replicas on {image}, "
                            f"waiting for at least {min_ready}", **facts)
    scaled = "scaled to zero by KEDA, " if desired == 0 else ""
    return RolloutState(HEALTHY, f"synced and healthy at revision {facts['revision'][:10]}; "
                        f"Deployment {name} {scaled}{ready}/{desired} replicas ready on {image}",
                        **facts)


def wait_for_rollout(reader: ClusterReader, target: Target, expected_image: str = "",
                     expected_revision: str = "", min_ready: int = 0, timeout: float = 0.0,
                     interval: float = 10.0, clock=time.monotonic, sleep=time.sleep) -> RolloutState:
    """Read the rollout state until it is healthy or degraded, or ``timeout`` seconds pass.

    With ``timeout`` 0 the state is read once. An unreachable API is retried
    until the timeout, since a promotion job may start while the API server is
    briefly unavailable.

    Raises:
        ClusterUnreachableError: the API was unreachable at the last attempt.
        DeployError: the Application does not exist.
    """
    deadline = clock() + timeout
    while True:
        try:
            state = assess(reader.application(target), reader.deployment(target), target,
                           expected_image, expected_revision, min_ready)
        except ClusterUnreachableError as error:
            if clock() + interval > deadline:
                raise
            logger.warning("%s; retrying in %.0f s", error, interval)
        else:
            if state.state != PROGRESSING or clock() + interval > deadline:
                return state
            logger.info("%s: %s", target.application, state.message)
        sleep(interval)


def eks_api_client(cluster: str, region: str = ""):
    """Return a ``kubernetes.client.ApiClient`` for an EKS cluster, authenticated with AWS credentials.

    The bearer token is a presigned STS GetCallerIdentity request, the token
    ``aws eks get-token`` prints; EKS accepts it for 15 minutes, so callers
    that wait longer build a new client.

    Raises:
        DeployError: the cluster cannot be described with the current AWS credentials.
    """
    import base64
    import tempfile

    import boto3
    import botocore.exceptions
    from botocore.signers import RequestSigner
    from kubernetes import client

    session = boto3.session.Session(region_name=region or None)
    region = session.region_name
    try:
        cluster_info = session.client("eks").describe_cluster(name=cluster)["cluster"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise DeployError(f"cannot describe EKS cluster {cluster} in {region}: {error}") from error

    sts = session.client("sts")
    signer = RequestSigner(sts.meta.service_model.service_id, region, "sts", "v4",
                           session.get_credentials(), session.events)
    request = {"method": "GET", "body": {}, "context": {}, "headers": {"x-k8s-aws-id": cluster},
               "url": f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"}
    url = signer.generate_presigned_url(request, region_name=region, expires_in=60, operation_name="")
    token = "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")

    with tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False) as ca_file:
        ca_file.write(base64.b64decode(cluster_info["certificateAuthority"]["data"]))
    configuration = client.Configuration()
    configuration.host = cluster_info["endpoint"]
    configuration.ssl_ca_cert = ca_file.name
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def api_client(kubeconfig: str = "", context: str = ""):
    """Return a ``kubernetes.client.ApiClient`` from a kubeconfig, or from the pod's service account.

    The kubeconfig is ``kubeconfig`` if given, else ``$KUBECONFIG`` or
    ``~/.kube/config`` when they exist; inside a pod without a kubeconfig the
    in-cluster configuration is used.

    Raises:
        DeployError: no configuration is available.
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
        raise DeployError(f"invalid Kubernetes configuration {path or 'in-cluster'}: {error}") from error
    raise DeployError(f"no kubeconfig found ({kubeconfig or 'KUBECONFIG, ~/.kube/config'}) and not "
                      "running in a pod; pass --kubeconfig")
