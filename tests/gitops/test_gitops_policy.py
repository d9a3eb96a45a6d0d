"""Policy checks over the rendered manifests: what review would ask of every environment.

Schemas accept manifests that are valid but wrong for this platform (a
replica count that fights KEDA, a misspelt ``queueUrl`` in a trigger's
free-form metadata, a grace period shorter than the drain). These tests read
the rendered output of each overlay and component and check those rules.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest
import yaml
from gitops_support import ENVIRONMENTS, GITOPS, REPO_ROOT, documents, find, one

WORKER_TARGETS = ("base", "staging", "prod", "component-model-source-s3", "component-s3-comparison")
DIGEST_PINNED = re.compile(r"^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")
# Keys the worker reads (WorkerConfig.from_env) plus what the Deployment needs.
WORKER_SETTINGS = {
    "QUEUE_URL", "MODEL_SOURCE", "BUNDLE_PATH", "BUNDLE_URI", "MODEL_STORE_URI",
    "PREDICTIONS_BUCKET", "IMAGE_REF", "IMAGE_DIGEST", "WAIT_TIME_SECONDS",
    "VISIBILITY_TIMEOUT_SECONDS", "HEARTBEAT_SECONDS", "GRACE_SECONDS", "FAILURE_BACKOFF_SECONDS",
    "SCORING_THREADS", "CACHE_DIR", "LOG_LEVEL", "LOG_FORMAT", "METRICS_PORT", "AWS_REGION",
}
# Metadata keys of KEDA's aws-sqs-queue scaler (KEDA 2.17 documentation). The
# CRD schema accepts any key, so a misspelling would silently fall back to a
# default.
SQS_TRIGGER_KEYS = {
    "queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion",
    "awsEndpoint", "identityOwner", "scaleOnInFlight", "scaleOnDelayed",
}
SQS_TRIGGER_REQUIRED = {"queueURL", "queueLength", "activationQueueLength", "awsRegion",
                        "scaleOnInFlight"}


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """Return (workload name, pod spec) of every Deployment and CronJob."""
    specs = []
    for doc in docs:
        if doc["kind"] == "Deployment":
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            specs.append((doc["metadata"]["name"],
                          doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


def effective_env(docs: list[dict], container: dict) -> dict[str, str]:
    """Return a container's environment as the kubelet builds it: envFrom in order, then env."""
    env = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(one(docs, "ConfigMap", name).get("data", {}))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "")
    return env


def deployments(docs):
    return find(docs, "Deployment")


def worker_container(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")


# Deployments ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_deployment_has_no_replicas(rendered, target):
    for deployment in deployments(documents(rendered, target)):
        assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_rolling_update_never_reduces_capacity(rendered, target):
    for deployment in deployments(documents(rendered, target)):
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] in (0, "0", "0%")


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_grace_period_exceeds_drain_time(rendered, target):
    docs = documents(rendered, target)
    for deployment in deployments(docs):
        env = effective_env(docs, worker_container(deployment))
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > float(env["GRACE_SECONDS"]), deployment["metadata"]["name"]


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_probes_use_worker_endpoints(rendered, target):
    docs = documents(rendered, target)
    for deployment in deployments(docs):
        container = worker_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        metrics_port = int(effective_env(docs, container)["METRICS_PORT"])
        readiness = container["readinessProbe"]["httpGet"]
        liveness = container["livenessProbe"]["httpGet"]
        assert readiness["path"] == "/readyz"
        assert liveness["path"] == "/healthz"
        assert ports[readiness["port"]] == metrics_port
        assert ports[liveness["port"]] == metrics_port


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_containers_set_requests_and_limits(rendered, target):
    for name, spec in pod_specs(documents(rendered, target)):
        for container in spec["containers"]:
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(section, {}), f"{name}/{container['name']} {section}.{resource}"


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_pods_run_unprivileged_read_only(rendered, target):
    for name, spec in pod_specs(documents(rendered, target)):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_every_deployment_has_a_disruption_budget(rendered, target):
    docs = documents(rendered, target)
    budgets = find(docs, "PodDisruptionBudget")
    for deployment in deployments(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets
                    if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, deployment["metadata"]["name"]


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_workers_are_not_disrupted_mid_partition(rendered, target):
    for deployment in deployments(documents(rendered, target)):
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("karpenter.sh/do-not-disrupt") == "true"


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_topology_spread_selects_own_pods(rendered, target):
    for deployment in deployments(documents(rendered, target)):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert "topology.kubernetes.io/zone" in keys
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
            assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_service_accounts_carry_irsa_roles(rendered, target):
    docs = documents(rendered, target)
    for name, spec in pod_specs(docs):
        account = one(docs, "ServiceAccount", spec["serviceAccountName"])
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.match(r"^arn:aws:iam::\d{12}:role/[\w+=,.@-]+$", role), name


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_selectors_of_deployments_are_disjoint(rendered, target):
    found = deployments(documents(rendered, target))
    for first in found:
        for second in found:
            if first is second:
                continue
            selector = first["spec"]["selector"]["matchLabels"]
            other_labels = second["spec"]["template"]["metadata"]["labels"]
            assert not selector.items() <= other_labels.items(), (
                f"{first['metadata']['name']} selects the pods of {second['metadata']['name']}")


# Configuration -------------------------------------------------------------------------


def test_configmap_file_carries_worker_settings():
    """Terraform reads HEARTBEAT_SECONDS from this file, so its name and keys are a contract."""
    configmap = yaml.safe_load((GITOPS / "base" / "configmap.yaml").read_text())

    assert configmap["metadata"]["name"] == "ctr-worker"
    assert WORKER_SETTINGS <= set(configmap["data"])
    assert configmap["data"]["HEARTBEAT_SECONDS"] == "30"
    assert configmap["data"]["VISIBILITY_TIMEOUT_SECONDS"] == "120"
    assert configmap["data"]["GRACE_SECONDS"] == "50"
    assert configmap["data"]["METRICS_PORT"] == "8080"


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_workers_read_settings_from_configmap(rendered, target):
    docs = documents(rendered, target)
    for deployment in deployments(docs):
        env = effective_env(docs, worker_container(deployment))
        assert WORKER_SETTINGS <= set(env), deployment["metadata"]["name"]
        assert int(env["HEARTBEAT_SECONDS"]) < int(env["VISIBILITY_TIMEOUT_SECONDS"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_image_provenance_matches_image(rendered, environment):
    docs = documents(rendered, environment)
    for deployment in deployments(docs):
        container = worker_container(deployment)
        env = effective_env(docs, container)
        reference, _, digest = container["image"].partition("@")
        assert env["IMAGE_REF"] == reference
        assert env["IMAGE_DIGEST"] == digest


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_overlay_names_model_for_dispatcher(rendered, environment):
    docs = documents(rendered, environment)
    for name, spec in pod_specs(docs):
        env = effective_env(docs, spec["containers"][0])
        assert env.get("MODEL_NAME"), name
        assert env.get("MODEL_VERSION"), name
        tag = spec["containers"][0]["image"].split("@")[0].rsplit(":", 1)[1]
        assert tag.startswith(f"{env['MODEL_NAME']}-v{env['MODEL_VERSION']}-"), name


def test_prod_pins_images_by_digest(rendered):
    for name, spec in pod_specs(documents(rendered, "prod")):
        for container in spec["containers"]:
            assert DIGEST_PINNED.match(container["image"]), f"{name}: {container['image']}"


def test_dispatch_runs_daily_for_previous_day(rendered):
    for environment in ENVIRONMENTS:
        cronjob = one(documents(rendered, environment), "CronJob", "ctr-dispatch")
        command = " ".join(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"])
        minute, hour, day, month, weekday = cronjob["spec"]["schedule"].split()
        assert (day, month, weekday) == ("*", "*", "*")
        assert minute.isdigit()
        assert hour.isdigit()
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert "ctr dispatch --dt" in command
        assert "yesterday" in command


# KEDA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", WORKER_TARGETS)
def test_scaled_objects_use_sqs_trigger(rendered, target):
    docs = documents(rendered, target)
    for scaled in find(docs, "ScaledObject"):
        name = scaled["metadata"]["name"]
        spec = scaled["spec"]
        deployment = one(docs, "Deployment", spec["scaleTargetRef"]["name"])
        env = effective_env(docs, worker_container(deployment))
        (trigger,) = spec["triggers"]
        metadata = trigger["metadata"]
        authentication = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])

        assert trigger["type"] == "aws-sqs-queue", name
        assert set(metadata) <= SQS_TRIGGER_KEYS, f"{name}: unknown keys {set(metadata) - SQS_TRIGGER_KEYS}"
        assert SQS_TRIGGER_REQUIRED <= set(metadata), f"{name}: missing {SQS_TRIGGER_REQUIRED - set(metadata)}"
        assert metadata["queueURL"] == env["QUEUE_URL"], name
        assert metadata["awsRegion"] == env["AWS_REGION"], name
        assert metadata["scaleOnInFlight"] == "true", name
        assert int(metadata["queueLength"]) >= 1
        assert int(metadata["activationQueueLength"]) >= 0
        assert spec["minReplicaCount"] == 0
        assert spec["maxReplicaCount"] >= 1
        assert spec["cooldownPeriod"] > 0
        assert authentication["spec"]["podIdentity"] == {"provider": "aws", "identityOwner": "workload"}


def test_trigger_key_check_catches_misspelling():
    metadata = {"queueUrl": "https://sqs", "queueLength": "5", "activationQueueLength": "0",
                "awsRegion": "us-east-1", "scaleOnInFlight": "true"}

    assert not set(metadata) <= SQS_TRIGGER_KEYS
    assert not SQS_TRIGGER_REQUIRED <= set(metadata)


# The side-by-side comparison and the S3 model source ---------------------------------------


def test_model_source_component_switches_to_s3(rendered):
    docs = documents(rendered, "component-model-source-s3")
    env = effective_env(docs, worker_container(one(docs, "Deployment", "ctr-worker")))

    assert env["MODEL_SOURCE"] == "s3"


@pytest.mark.parametrize("target", ["component-s3-comparison", "staging"])
def test_comparison_is_isolated_from_main(rendered, target):
    docs = documents(rendered, target)
    main = effective_env(docs, worker_container(one(docs, "Deployment", "ctr-worker")))
    comparison_deployment = one(docs, "Deployment", "ctr-worker-s3")
    comparison = effective_env(docs, worker_container(comparison_deployment))
    scaled = one(docs, "ScaledObject", "ctr-worker-s3")
    dispatch = one(docs, "CronJob", "ctr-dispatch-s3")
    dispatch_env = effective_env(docs, dispatch["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])

    assert comparison["MODEL_SOURCE"] == "s3"
    assert comparison["QUEUE_URL"] != main["QUEUE_URL"]
    assert scaled["spec"]["triggers"][0]["metadata"]["queueURL"] == comparison["QUEUE_URL"]
    assert dispatch_env["QUEUE_URL"] == comparison["QUEUE_URL"]
    assert dispatch_env["PREDICTIONS_PREFIX"] == comparison["PREDICTIONS_PREFIX"]
    assert not comparison["PREDICTIONS_PREFIX"].startswith(main["PREDICTIONS_PREFIX"])
    assert not main["PREDICTIONS_PREFIX"].startswith(comparison["PREDICTIONS_PREFIX"])
    assert comparison_deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ctr-worker-s3"
    assert worker_container(comparison_deployment)["image"] == worker_container(one(docs, "Deployment", "ctr-worker"))["image"]


def test_staging_comparison_loads_a_bundle(rendered):
    docs = documents(rendered, "staging")
    comparison = effective_env(docs, worker_container(one(docs, "Deployment", "ctr-worker-s3")))

    assert comparison["BUNDLE_URI"].startswith("s3://")
    assert comparison["BUNDLE_URI"].endswith(f"/{comparison['MODEL_NAME']}/{comparison['MODEL_VERSION']}/")


# Karpenter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_tolerations_match_node_pool_taints(rendered, environment):
    docs = documents(rendered, environment)
    pools = {p["metadata"]["name"]: p for p in documents(rendered, f"karpenter-{environment}")
             if p["kind"] == "NodePool"}
    for name, spec in pod_specs(docs):
        pool_name = spec["nodeSelector"]["karpenter.sh/nodepool"]
        assert pool_name in pools, f"{name} selects unknown NodePool {pool_name}"
        tolerations = spec.get("tolerations", [])
        for taint in pools[pool_name]["spec"]["template"]["spec"].get("taints", []):
            tolerated = any(
                t.get("key") == taint["key"] and t.get("effect", taint["effect"]) == taint["effect"]
                and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                for t in tolerations)
            assert tolerated, f"{name} does not tolerate {taint} of NodePool {pool_name}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_node_pools_fit_their_workloads(rendered, environment):
    docs = documents(rendered, f"karpenter-{environment}")
    classes = {c["metadata"]["name"] for c in find(docs, "EC2NodeClass")}
    inference = one(docs, "NodePool", "inference")["spec"]
    training = one(docs, "NodePool", "training")["spec"]
    requirements = {r["key"]: r for r in inference["template"]["spec"]["requirements"]}
    gpu = {r["key"]: r for r in training["template"]["spec"]["requirements"]}

    assert set(requirements["karpenter.sh/capacity-type"]["values"]) == {"spot", "on-demand"}
    assert requirements["karpenter.k8s.aws/instance-family"]["operator"] == "In"
    assert requirements["karpenter.k8s.aws/instance-family"]["values"]
    assert requirements["kubernetes.io/arch"]["values"] == ["amd64"]
    assert gpu["karpenter.k8s.aws/instance-gpu-count"]["operator"] == "Gt"
    assert "nvidia.com/gpu" in training["limits"]
    assert training["disruption"]["consolidationPolicy"] == "WhenEmpty"
    for pool in (inference, training):
        assert pool["template"]["spec"]["nodeClassRef"]["name"] in classes
    for node_class in find(docs, "EC2NodeClass"):
        tag = node_class["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"]
        assert tag == f"ctr-{environment}"
        # Terraform names the node role <cluster>-karpenter-node.
        assert node_class["spec"]["role"] == f"ctr-{environment}-karpenter-node"


def test_prod_node_pool_holds_max_workers(rendered):
    prod = documents(rendered, "prod")
    scaled = one(prod, "ScaledObject", "ctr-worker")
    deployment = one(prod, "Deployment", "ctr-worker")
    limit = one(documents(rendered, "karpenter-prod"), "NodePool", "inference")["spec"]["limits"]["cpu"]
    cpu = worker_container(deployment)["resources"]["requests"]["cpu"]

    assert scaled["spec"]["maxReplicaCount"] * float(cpu) <= float(limit)


# Capacity against `ctr plan` ------------------------------------------------------------------


def _plan(*options: str) -> dict:
    ctr = shutil.which("ctr") or str(REPO_ROOT / ".venv" / "bin" / "ctr")
    completed = subprocess.run([ctr, "plan", "--rows", "1e9", "--deadline", "1h", "--json", *options],
                               capture_output=True, text=True, check=False, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _quantity(value: str) -> float:
    """Convert a Kubernetes CPU or memory quantity (``500m``, ``8Gi``) to cores or GiB."""
    units = {"m": 1e-3, "Ki": 2**-20, "Mi": 2**-10, "Gi": 1.0, "Ti": 2**10}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_prod_capacity_agrees_with_plan(rendered):
    deployment = one(documents(rendered, "prod"), "Deployment", "ctr-worker")
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    plan = _plan(
        "--pod-cpus", str(math.ceil(_quantity(resources["limits"]["cpu"]))),
        "--pod-cpu-request", str(_quantity(resources["requests"]["cpu"])),
        "--pod-memory-gib", str(_quantity(resources["requests"]["memory"])),
    )
    scaled = one(documents(rendered, "prod"), "ScaledObject", "ctr-worker")

    assert scaled["spec"]["maxReplicaCount"] == plan["keda_max_replicas"]
    assert int(scaled["spec"]["triggers"][0]["metadata"]["queueLength"]) == plan["keda_messages_per_pod"]
