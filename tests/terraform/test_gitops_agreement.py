"""GitOps and Terraform name the same AWS resources, environment by environment.

Each environment's overlay, Argo CD Applications and Karpenter node pools are
rendered with ``kubectl kustomize``. They refer to AWS by name: role ARNs on
service accounts and in Helm values, queue URLs, bucket names, the cluster
name, the discovery tag and the image repository. Terraform is parsed with
python-hcl2 and evaluated per environment (``tf_eval``). Each
name that a manifest uses must be created by Terraform for that environment,
and each role must trust exactly the service account that carries it and
allow what that pod does with its ConfigMap's queue and buckets.

Terraform's account ID is the one in ``envs/<env>/account.auto.tfvars``; the
region is the default of the root variable ``region``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import urlparse

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions
from tf_eval import Account, Evaluator
from tf_hcl import UnresolvedValue, load_module
from tf_support import ENVIRONMENTS, REPO_ROOT, TERRAFORM_DIR

from ctr.testing.tools import kubectl

GITOPS = REPO_ROOT / "gitops"
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
ROLE_ARN = re.compile(r"^arn:aws:iam::(?P<account>\d{12}):role/(?P<name>[\w+=,.@-]+)$")
QUEUE_URL = re.compile(
    r"^https://sqs\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<account>\d{12})/(?P<name>[\w-]+)$"
)
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repository>[^:@]+)"
)
# Every account ID and region that a manifest string names, wherever it appears.
ACCOUNT_MENTION = re.compile(
    r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):|/(\d{12})/|(\d{12})\.dkr\.ecr"
)
REGION_MENTION = re.compile(r"sqs\.([a-z0-9-]+)\.amazonaws\.com|\.dkr\.ecr\.([a-z0-9-]+)\.")
WORKER_QUEUE_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
}
# Defaults of the Helm charts that the Argo CD Applications install, for
# values the Applications do not set: KEDA's operator service account
# (chart keda, serviceAccount.operator.name) and Karpenter's (chart
# karpenter, serviceAccount.name).
KEDA_SERVICE_ACCOUNT = "keda-operator"
KARPENTER_SERVICE_ACCOUNT = "karpenter"


# Rendering -------------------------------------------------------------------------------------


@cache
def rendered(relative: str) -> tuple[dict, ...]:
    """Render ``gitops/<relative>`` with ``kubectl kustomize``."""
    try:
        binary = kubectl()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    result = subprocess.run(
        [binary, "kustomize", str(GITOPS / relative)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize gitops/{relative} failed:\n{result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def of_kind(documents, kind: str) -> list[dict]:
    return [document for document in documents if document["kind"] == kind]


def named(documents, kind: str, name: str) -> dict:
    found = [
        document for document in of_kind(documents, kind) if document["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@dataclass
class Workload:
    """A pod template of the overlay: who it runs as and the environment its container gets."""

    kind: str
    name: str
    namespace: str
    service_account: str
    config: dict[str, str]
    images: list[str]


def pod_spec(document: dict) -> dict:
    if document["kind"] == "CronJob":
        return document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return document["spec"]["template"]["spec"]


def workloads(documents) -> list[Workload]:
    """Return the Deployments and CronJobs with the environment of their first container.

    Kubernetes applies ``envFrom`` sources in order, a later source winning on
    a duplicate key, and then ``env``.
    """
    config_maps = {
        document["metadata"]["name"]: document.get("data") or {}
        for document in of_kind(documents, "ConfigMap")
    }
    found = []
    for document in documents:
        if document["kind"] not in ("Deployment", "CronJob"):
            continue
        spec = pod_spec(document)
        container = spec["containers"][0]
        config: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                config.update(config_maps[source["configMapRef"]["name"]])
        for variable in container.get("env", []):
            if "value" in variable:
                config[variable["name"]] = variable["value"]
        found.append(
            Workload(
                kind=document["kind"],
                name=document["metadata"]["name"],
                namespace=document["metadata"]["namespace"],
                service_account=spec.get("serviceAccountName", "default"),
                config=config,
                images=[c["image"] for c in spec["containers"] + spec.get("initContainers", [])],
            )
        )
    return found


@dataclass(frozen=True)
class Binding:
    """A Kubernetes service account and the IAM role its annotation or Helm value names."""

    namespace: str
    service_account: str
    role_arn: str
    source: str

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def helm_values(application: dict) -> dict:
    return application["spec"]["source"]["helm"]["valuesObject"]


def role_bindings(environment: str) -> list[Binding]:
    """Return every service account in the environment's manifests that names an IAM role."""
    bindings = []
    for account in of_kind(rendered(f"overlays/{environment}"), "ServiceAccount"):
        role = (account["metadata"].get("annotations") or {}).get(ROLE_ARN_ANNOTATION)
        if role:
            bindings.append(
                Binding(
                    account["metadata"]["namespace"],
                    account["metadata"]["name"],
                    role,
                    f"ServiceAccount {account['metadata']['name']} in overlays/{environment}",
                )
            )

    applications = rendered(f"argocd/{environment}")
    keda = named(applications, "Application", "keda")
    keda_values = helm_values(keda)
    bindings.append(
        Binding(
            keda["spec"]["destination"]["namespace"],
            keda_values.get("serviceAccount", {})
            .get("operator", {})
            .get("name", KEDA_SERVICE_ACCOUNT),
            keda_values["podIdentity"]["aws"]["irsa"]["roleArn"],
            f"Application keda in argocd/{environment}",
        )
    )
    karpenter = named(applications, "Application", "karpenter")
    karpenter_account = helm_values(karpenter)["serviceAccount"]
    bindings.append(
        Binding(
            karpenter["spec"]["destination"]["namespace"],
            karpenter_account.get("name", KARPENTER_SERVICE_ACCOUNT),
            karpenter_account["annotations"][ROLE_ARN_ANNOTATION],
            f"Application karpenter in argocd/{environment}",
        )
    )
    return bindings


def all_strings(value) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in all_strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in all_strings(item)]
    return [value] if isinstance(value, str) else []


def manifest_documents(environment: str) -> list[dict]:
    return [
        *rendered(f"overlays/{environment}"),
        *rendered(f"argocd/{environment}"),
        *rendered(f"platform/karpenter/{environment}"),
    ]


# Terraform -------------------------------------------------------------------------------------


@dataclass
class Role:
    """An IAM role that Terraform creates, with its trust and its inline policies evaluated."""

    name: str
    arn: str
    address: str
    trust: list[dict]
    policy: list[dict]

    def subjects(self) -> set[str]:
        """Return the ``:sub`` values of the web identity statements (the service accounts)."""
        return {
            value
            for statement in self.trust
            if "sts:AssumeRoleWithWebIdentity" in statement["actions"]
            for condition in statement["conditions"]
            if condition["variable"].endswith(":sub") and condition["test"] == "StringEquals"
            for value in condition["values"]
        }

    def audiences(self) -> set[str]:
        return {
            value
            for statement in self.trust
            for condition in statement["conditions"]
            if condition["variable"].endswith(":aud")
            for value in condition["values"]
        }

    def aws_principals(self) -> set[str]:
        return {
            identifier
            for statement in self.trust
            for principal in statement["principals"]
            if principal["type"] == "AWS"
            for identifier in principal["identifiers"]
        }

    def allows(self, action: str, resource: str) -> bool:
        """Tell whether an Allow statement grants ``action`` on ``resource`` (``*`` as a suffix only)."""
        for statement in self.policy:
            if statement["effect"] != "Allow" or action not in statement["actions"]:
                continue
            for pattern in statement["resources"]:
                if pattern == resource or (
                    pattern.endswith("*") and resource.startswith(pattern[:-1])
                ):
                    return True
        return False

    def list_prefixes(self, bucket_arn: str) -> set[str]:
        """Return the ``s3:prefix`` patterns under which the role may list ``bucket_arn``."""
        prefixes = set()
        for statement in self.policy:
            if (
                "s3:ListBucket" not in statement["actions"]
                or bucket_arn not in statement["resources"]
            ):
                continue
            conditions = [c for c in statement["conditions"] if c["variable"] == "s3:prefix"]
            prefixes |= {value for c in conditions for value in c["values"]} or {"*"}
        return prefixes

    def actions(self) -> set[str]:
        return {action for statement in self.policy for action in statement["actions"]}


@dataclass
class TerraformFacts:
    """What Terraform creates for one environment, by the names AWS gives it."""

    environment: str
    account: Account
    evaluator: Evaluator
    roles: dict[str, Role] = field(default_factory=dict)
    queues: set[str] = field(default_factory=set)
    dead_letter_queues: set[str] = field(default_factory=set)
    buckets: set[str] = field(default_factory=set)
    repositories: set[str] = field(default_factory=set)
    clusters: set[str] = field(default_factory=set)
    # Scoring queue name -> the heartbeat its module assumes and its visibility timeout.
    heartbeats: dict[str, tuple[int, int]] = field(default_factory=dict)

    def output(self, name: str) -> object:
        """Return the value of an output of ``terraform/envs/<environment>``."""
        root = self.evaluator.instances["root"]
        assert name in root.module.outputs, (
            f"terraform/envs/{self.environment} has no output {name}, which GitOps needs"
        )
        return self.evaluator.output(root, name)

    def role_by_arn(self, arn: str) -> Role | None:
        match = ROLE_ARN.match(arn)
        return self.roles.get(match.group("name")) if match else None

    def role(self, arn: str, user: str) -> Role:
        """Return the role with ARN ``arn``, failing the test when Terraform does not create it."""
        role = self.role_by_arn(arn)
        assert role is not None, (
            f"{user} uses {arn}, which Terraform does not create in {self.environment} "
            f"(roles: {', '.join(sorted(self.roles))})"
        )
        return role


def account_of(environment: str) -> Account:
    root = TERRAFORM_DIR / "envs" / environment
    tfvars = hcl2.loads(
        (root / "account.auto.tfvars").read_text(),
        serialization_options=SerializationOptions(strip_string_quotes=True),
    )
    region = load_module(root).variables["region"]["default"]
    return Account(account_id=str(tfvars["aws_account_id"]), region=region)


@cache
def terraform(environment: str) -> TerraformFacts:
    account = account_of(environment)
    evaluator = Evaluator(TERRAFORM_DIR / "envs" / environment, account)
    facts = TerraformFacts(environment, account, evaluator)

    for scope in evaluator.enabled_scopes():
        module = scope.module
        for name in module.resources_of_type("aws_sqs_queue"):
            for key in evaluator.resource_instances(scope, "aws_sqs_queue", name):
                queue = evaluator.resource_attribute(scope, "aws_sqs_queue", name, key, "name")
                facts.queues.add(queue)
        for body in module.resources_of_type("aws_sqs_queue_redrive_policy").values():
            target = re.search(
                r"deadLetterTargetArn\s*=\s*aws_sqs_queue\.(\w+)\.arn", body["redrive_policy"]
            )
            facts.dead_letter_queues.add(
                evaluator.resource_attribute(scope, "aws_sqs_queue", target.group(1), None, "name")
            )
        if module.path.name == "queue":
            scoring = module.resources[("aws_sqs_queue", "scoring")]
            facts.heartbeats[
                evaluator.resource_attribute(scope, "aws_sqs_queue", "scoring", None, "name")
            ] = (
                evaluator.value(scope, "${var.worker_heartbeat_seconds}"),
                evaluator.value(scope, scoring["visibility_timeout_seconds"]),
            )
        for name in module.resources_of_type("aws_s3_bucket"):
            for key in evaluator.resource_instances(scope, "aws_s3_bucket", name):
                facts.buckets.add(
                    evaluator.resource_attribute(scope, "aws_s3_bucket", name, key, "id")
                )
        for name in module.resources_of_type("aws_ecr_repository"):
            facts.repositories.add(
                evaluator.resource_attribute(scope, "aws_ecr_repository", name, None, "name")
            )
        for name in module.resources_of_type("aws_eks_cluster"):
            facts.clusters.add(
                evaluator.resource_attribute(scope, "aws_eks_cluster", name, None, "name")
            )
        for name, body in module.resources_of_type("aws_iam_role").items():
            role = Role(
                name=evaluator.resource_attribute(scope, "aws_iam_role", name, None, "name"),
                arn=evaluator.resource_attribute(scope, "aws_iam_role", name, None, "arn"),
                address=f"{scope.address}.aws_iam_role.{name}",
                trust=evaluator.statements(
                    scope, evaluator.policy_document(scope, body["assume_role_policy"])
                ),
                policy=[],
            )
            for policy in module.resources_of_type("aws_iam_role_policy").values():
                if policy["role"] in (
                    f"${{aws_iam_role.{name}.id}}",
                    f"${{aws_iam_role.{name}.name}}",
                ):
                    document = evaluator.policy_document(scope, policy["policy"])
                    role.policy.extend(evaluator.statements(scope, document))
            assert role.name not in facts.roles, f"two roles named {role.name} in {environment}"
            facts.roles[role.name] = role

    return facts


def queue_name(url: str, facts: TerraformFacts, where: str) -> str:
    """Return the queue name of a queue URL after checking its region and account."""
    match = QUEUE_URL.match(url)
    assert match, f"{where}: {url!r} is not an SQS queue URL"
    assert match.group("region") == facts.account.region, f"{where}: {url} is in another region"
    assert match.group("account") == facts.account.account_id, (
        f"{where}: {url} is in another account"
    )
    return match.group("name")


def queue_arn(name: str, facts: TerraformFacts) -> str:
    return f"arn:aws:sqs:{facts.account.region}:{facts.account.account_id}:{name}"


def bucket_of(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    assert parsed.scheme == "s3", f"{uri!r} is not an s3:// URI"
    return parsed.netloc, parsed.path.lstrip("/")


# Tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_terraform_names_evaluate(environment):
    facts = terraform(environment)

    assert facts.roles, f"{environment}: no IAM role was found in Terraform"
    assert facts.queues
    assert facts.buckets
    assert facts.repositories
    assert facts.clusters
    assert facts.output("region") == facts.account.region


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_manifests_name_terraform_account_and_region(environment):
    facts = terraform(environment)
    accounts, regions = set(), set()
    for text in all_strings(manifest_documents(environment)):
        accounts |= {group for match in ACCOUNT_MENTION.findall(text) for group in match if group}
        regions |= {group for match in REGION_MENTION.findall(text) for group in match if group}
    config = named(rendered(f"overlays/{environment}"), "ConfigMap", "ctr-worker")["data"]

    assert accounts == {facts.account.account_id}, (
        f"{environment}: the manifests name accounts {sorted(accounts)}, Terraform's account is "
        f"{facts.account.account_id} (terraform/envs/{environment}/account.auto.tfvars)"
    )
    assert regions == {facts.account.region}, (
        f"{environment}: the manifests name regions {sorted(regions)}, Terraform's is {facts.account.region}"
    )
    assert config["AWS_REGION"] == facts.account.region


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_manifest_roles_trust_service_accounts(environment):
    facts = terraform(environment)
    bindings = role_bindings(environment)

    assert len(bindings) >= 4, f"{environment}: found only {bindings}"
    for binding in bindings:
        role = facts.role_by_arn(binding.role_arn)
        assert role is not None, (
            f"{binding.source} names {binding.role_arn}, which Terraform does not create in "
            f"{environment} (roles: {', '.join(sorted(facts.roles))})"
        )
        assert role.arn == binding.role_arn, f"{binding.source}: {binding.role_arn} != {role.arn}"
        assert binding.subject in role.subjects(), (
            f"{role.address} ({role.name}) does not trust {binding.subject}, the service account "
            f"of {binding.source}; it trusts {sorted(role.subjects())}"
        )
        assert role.audiences() == {"sts.amazonaws.com"}, f"{role.name}: {role.audiences()}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_terraform_workload_role_is_used(environment):
    facts = terraform(environment)
    used = {binding.subject for binding in role_bindings(environment)}
    # The overlay's namespaces only: kube-system also contains the VPC CNI's
    # service account, which the EKS managed add-on uses, not GitOps.
    namespaces = {
        account["metadata"]["namespace"]
        for account in of_kind(rendered(f"overlays/{environment}"), "ServiceAccount")
    }

    for role in facts.roles.values():
        workload_subjects = {
            subject for subject in role.subjects() if subject.split(":")[2] in namespaces
        }
        unused = workload_subjects - used
        assert not unused, (
            f"{environment}: Terraform creates {role.name} for {sorted(unused)}, which no manifest "
            "of this environment uses; turn the stack off in terraform/envs or add it to gitops/"
        )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_workers_consume_their_configured_queue(environment):
    facts = terraform(environment)
    documents = rendered(f"overlays/{environment}")
    accounts = {(b.namespace, b.service_account): b for b in role_bindings(environment)}
    deployments = [w for w in workloads(documents) if w.kind == "Deployment"]

    assert deployments, f"{environment}: the overlay renders no Deployment"
    for worker in deployments:
        binding = accounts[(worker.namespace, worker.service_account)]
        role = facts.role(binding.role_arn, binding.source)
        queue = queue_name(worker.config["QUEUE_URL"], facts, f"Deployment {worker.name}")
        predictions = f"arn:aws:s3:::{worker.config['PREDICTIONS_BUCKET']}"
        prefix = worker.config["PREDICTIONS_PREFIX"]

        assert queue in facts.queues, (
            f"{worker.name} reads {queue}, which Terraform does not create"
        )
        assert queue not in facts.dead_letter_queues, f"{worker.name} reads a dead-letter queue"
        for action in sorted(WORKER_QUEUE_ACTIONS):
            assert role.allows(action, queue_arn(queue, facts)), (
                f"{role.name}, the role of Deployment {worker.name}, lacks {action} on {queue}"
            )
        assert role.allows("s3:PutObject", f"{predictions}/{prefix}dt=2026-01-01/part-0.parquet"), (
            f"{role.name} may not write under {prefix} of {worker.config['PREDICTIONS_BUCKET']}, "
            f"where Deployment {worker.name} writes (PREDICTIONS_PREFIX)"
        )
        for dead_letter_queue in facts.dead_letter_queues:
            assert not any(
                role.allows(action, queue_arn(dead_letter_queue, facts))
                for action in role.actions()
            ), f"{role.name} has a permission on the dead-letter queue {dead_letter_queue}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_worker_heartbeat_fits_queue(environment):
    facts = terraform(environment)

    for worker in workloads(rendered(f"overlays/{environment}")):
        if worker.kind != "Deployment":
            continue
        queue = queue_name(worker.config["QUEUE_URL"], facts, f"Deployment {worker.name}")
        heartbeat = int(worker.config["HEARTBEAT_SECONDS"])
        visibility = int(worker.config["VISIBILITY_TIMEOUT_SECONDS"])
        terraform_heartbeat, queue_visibility = facts.heartbeats[queue]

        assert heartbeat == terraform_heartbeat, (
            f"{worker.name} extends visibility every {heartbeat} s, Terraform sized {queue} for "
            f"{terraform_heartbeat} s (worker_heartbeat_seconds)"
        )
        assert visibility >= 3 * heartbeat, f"{worker.name}: {visibility} s < 3 x {heartbeat} s"
        assert queue_visibility >= 3 * heartbeat, (
            f"{queue}: {queue_visibility} s < 3 x {heartbeat} s"
        )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_workers_read_their_model_store(environment):
    facts = terraform(environment)
    accounts = {(b.namespace, b.service_account): b for b in role_bindings(environment)}

    for worker in workloads(rendered(f"overlays/{environment}")):
        if worker.kind != "Deployment":
            continue
        role = facts.role(
            accounts[(worker.namespace, worker.service_account)].role_arn, worker.name
        )
        uris = [worker.config["MODEL_STORE_URI"]]
        if worker.config.get("MODEL_SOURCE") == "s3":
            uris.append(worker.config["BUNDLE_URI"])
        for uri in uris:
            bucket, key = bucket_of(uri)
            assert bucket in facts.buckets, (
                f"{worker.name} reads {uri}: no such bucket in Terraform"
            )
            assert role.allows(
                "s3:GetObject", f"arn:aws:s3:::{bucket}/{key.rstrip('/')}/bundle.json"
            ), f"{role.name} may not read {uri}, which Deployment {worker.name} loads"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_dispatchers_send_to_their_configured_queue(environment):
    facts = terraform(environment)
    accounts = {(b.namespace, b.service_account): b for b in role_bindings(environment)}
    dispatchers = [w for w in workloads(rendered(f"overlays/{environment}")) if w.kind == "CronJob"]

    assert dispatchers, f"{environment}: the overlay renders no dispatcher CronJob"
    for dispatcher in dispatchers:
        binding = accounts[(dispatcher.namespace, dispatcher.service_account)]
        role = facts.role(binding.role_arn, binding.source)
        queue = queue_name(dispatcher.config["QUEUE_URL"], facts, f"CronJob {dispatcher.name}")
        features = f"arn:aws:s3:::{dispatcher.config['FEATURES_BUCKET']}"
        predictions = f"arn:aws:s3:::{dispatcher.config['PREDICTIONS_BUCKET']}"
        prefix = dispatcher.config["PREDICTIONS_PREFIX"]

        assert queue in facts.queues, f"{dispatcher.name} sends to {queue}, which Terraform lacks"
        assert role.allows("sqs:SendMessage", queue_arn(queue, facts)), (
            f"{role.name}, the role of CronJob {dispatcher.name}, may not send to {queue}"
        )
        assert not role.actions() & {"sqs:ReceiveMessage", "sqs:DeleteMessage"}, (
            f"{role.name} may receive or delete messages; a dispatcher only sends"
        )
        assert dispatcher.config["FEATURES_BUCKET"] in facts.buckets, (
            f"{dispatcher.name} lists {dispatcher.config['FEATURES_BUCKET']}, which Terraform "
            "does not create"
        )
        assert "features/*" in role.list_prefixes(features), (
            f"{role.name} may not list features/ in {dispatcher.config['FEATURES_BUCKET']}"
        )
        assert f"{prefix}*" in role.list_prefixes(predictions), (
            f"{role.name} may not list {prefix} in {dispatcher.config['PREDICTIONS_BUCKET']}; "
            f"it has {role.list_prefixes(predictions)}"
        )
        run_file = f"{predictions}/{prefix}dt=2026-01-01/run=2026-01-01.v1/_SUCCESS"
        assert role.allows("s3:GetObject", run_file), (
            f"{role.name} may not read the run files under {prefix}"
        )
        assert role.allows("s3:PutObject", run_file), (
            f"{role.name} may not write the run files under {prefix}"
        )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_keda_reads_every_scaled_queue(environment):
    facts = terraform(environment)
    documents = rendered(f"overlays/{environment}")
    bindings = role_bindings(environment)
    accounts = {(b.namespace, b.service_account): b for b in bindings}
    keda = next(b for b in bindings if b.source.startswith("Application keda"))
    keda_role = facts.role(keda.role_arn, keda.source)

    for scaled in of_kind(documents, "ScaledObject"):
        namespace = scaled["metadata"]["namespace"]
        target = named(documents, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        worker_account = pod_spec(target)["serviceAccountName"]
        worker_role = facts.role(
            accounts[(namespace, worker_account)].role_arn, target["metadata"]["name"]
        )
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] != "aws-sqs-queue":
                continue
            authentication = named(
                documents, "TriggerAuthentication", trigger["authenticationRef"]["name"]
            )
            queue = queue_name(trigger["metadata"]["queueURL"], facts, scaled["metadata"]["name"])

            assert authentication["spec"]["podIdentity"] == {
                "provider": "aws",
                "identityOwner": "workload",
            }
            assert trigger["metadata"]["awsRegion"] == facts.account.region
            assert queue in facts.queues, f"{scaled['metadata']['name']} watches {queue}"
            assert queue not in facts.dead_letter_queues, f"{queue} is a dead-letter queue"
            assert keda.subject in worker_role.subjects(), (
                f"{worker_role.name} does not trust KEDA's operator ({keda.subject})"
            )
            assert keda_role.arn in worker_role.aws_principals(), (
                f"{worker_role.name} does not trust KEDA's role {keda_role.name}"
            )
            assert keda_role.allows("sts:AssumeRole", worker_role.arn), (
                f"{keda_role.name} may not assume {worker_role.name}, the role that "
                f"{scaled['metadata']['name']} scales with"
            )
            assert worker_role.allows("sqs:GetQueueAttributes", queue_arn(queue, facts))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_configmaps_match_terraform_outputs(environment):
    facts = terraform(environment)
    documents = rendered(f"overlays/{environment}")
    config = named(documents, "ConfigMap", "ctr-worker")["data"]
    comparison = [
        d for d in of_kind(documents, "ConfigMap") if d["metadata"]["name"] == "ctr-worker-s3"
    ]
    s3_comparison = facts.output("s3_comparison")

    for key, value in facts.output("worker_config").items():
        assert config.get(key) == value, (
            f"{environment}: ctr-worker ConfigMap has {key}={config.get(key)!r}, Terraform's "
            f"worker_config output has {value!r}"
        )
    if comparison:
        data = comparison[0]["data"]
        assert data["QUEUE_URL"] == s3_comparison["queue_url"], (
            f"{environment}: ctr-worker-s3 reads {data['QUEUE_URL']}, Terraform's s3_comparison "
            f"queue is {s3_comparison['queue_url']}"
        )
        assert data["PREDICTIONS_PREFIX"] == s3_comparison["predictions_prefix"]
        assert data["QUEUE_URL"] != config["QUEUE_URL"]
        assert not data["PREDICTIONS_PREFIX"].startswith(config["PREDICTIONS_PREFIX"])
    else:
        assert all(value is None for value in s3_comparison.values()), (
            f"{environment}: Terraform creates the S3 comparison stack {s3_comparison}, but the "
            "overlay does not use components/s3-comparison; set s3_comparison_enabled = false"
        )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_configmap_buckets_exist(environment):
    facts = terraform(environment)

    for config_map in of_kind(rendered(f"overlays/{environment}"), "ConfigMap"):
        data = config_map.get("data") or {}
        names = [data[key] for key in ("PREDICTIONS_BUCKET", "FEATURES_BUCKET") if data.get(key)]
        names += [
            bucket_of(data[key])[0] for key in ("MODEL_STORE_URI", "BUNDLE_URI") if data.get(key)
        ]
        for bucket in names:
            assert bucket in facts.buckets, (
                f"{environment}: ConfigMap {config_map['metadata']['name']} names bucket {bucket}, "
                f"which Terraform does not create (buckets: {', '.join(sorted(facts.buckets))})"
            )
        if data.get("PREDICTIONS_BUCKET"):
            assert data["PREDICTIONS_BUCKET"] == facts.output("bucket_names")["predictions"]
        if data.get("FEATURES_BUCKET"):
            assert data["FEATURES_BUCKET"] == facts.output("bucket_names")["features"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_karpenter_settings_match_cluster(environment):
    facts = terraform(environment)
    application = named(rendered(f"argocd/{environment}"), "Application", "karpenter")
    settings = helm_values(application)["settings"]
    controller = facts.role(
        helm_values(application)["serviceAccount"]["annotations"][ROLE_ARN_ANNOTATION],
        f"Application karpenter in argocd/{environment}",
    )
    interruption_queue = queue_arn(settings["interruptionQueue"], facts)

    assert settings["clusterName"] in facts.clusters, (
        f"Karpenter's clusterName {settings['clusterName']} is not Terraform's cluster {facts.clusters}"
    )
    assert settings["clusterName"] == facts.output("cluster_name")
    assert settings["interruptionQueue"] == facts.output("karpenter_interruption_queue_name"), (
        f"Karpenter reads {settings['interruptionQueue']}, Terraform's interruption queue is "
        f"{facts.output('karpenter_interruption_queue_name')}"
    )
    assert controller.allows("sqs:ReceiveMessage", interruption_queue)
    assert controller.arn == facts.output("karpenter_controller_role_arn")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_node_classes_match_terraform(environment):
    facts = terraform(environment)
    node_classes = of_kind(rendered(f"platform/karpenter/{environment}"), "EC2NodeClass")
    controller = facts.role(
        facts.output("karpenter_controller_role_arn"), "output karpenter_controller_role_arn"
    )
    node_role = facts.roles.get(facts.output("karpenter_node_role_name"))

    assert node_classes, f"{environment}: no EC2NodeClass rendered"
    assert node_role is not None
    for node_class in node_classes:
        spec = node_class["spec"]
        name = node_class["metadata"]["name"]
        assert spec["role"] == node_role.name, (
            f"EC2NodeClass {name} runs nodes as {spec['role']}, Terraform's node role is {node_role.name}"
        )
        assert controller.allows("iam:PassRole", node_role.arn)
        for terms in ("subnetSelectorTerms", "securityGroupSelectorTerms"):
            tags = [term["tags"]["karpenter.sh/discovery"] for term in spec[terms]]
            assert tags == [facts.output("karpenter_discovery_tag")], (
                f"EC2NodeClass {name} selects {terms} tagged {tags}, Terraform tags "
                f"{facts.output('karpenter_discovery_tag')}"
            )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_images_come_from_terraform_registry(environment):
    facts = terraform(environment)
    images = {image for w in workloads(rendered(f"overlays/{environment}")) for image in w.images}

    assert images
    for image in images:
        match = ECR_IMAGE.match(image)
        assert match, f"{environment}: image {image} is not in an ECR registry"
        assert match.group("repository") in facts.repositories, (
            f"{environment}: image {image} is in repository {match.group('repository')}, Terraform "
            f"creates {sorted(facts.repositories)}"
        )
        assert image.startswith(facts.output("registry_url") + ":"), (
            f"{environment}: image {image} is not in {facts.output('registry_url')}"
        )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_promote_tags_what_lifecycle_keeps(environment):
    from ctr.deploy.registry import PROMOTED_TAG_PREFIX

    assert terraform(environment).output("promoted_tag_prefix") == PROMOTED_TAG_PREFIX, (
        "ctr deploy promote adds a tag the ECR lifecycle policy does not keep"
    )


# The checks above must be able to fail -------------------------------------------------------


def test_role_check_rejects_wrong_subject():
    role = Role(
        name="ctr-test-worker",
        arn="arn:aws:iam::111122223333:role/ctr-test-worker",
        address="test",
        trust=[
            {
                "actions": ["sts:AssumeRoleWithWebIdentity"],
                "principals": [],
                "conditions": [
                    {
                        "test": "StringEquals",
                        "variable": "issuer:sub",
                        "values": ["system:serviceaccount:ctr:worker"],
                    }
                ],
            }
        ],
        policy=[
            {
                "effect": "Allow",
                "actions": ["s3:PutObject"],
                "resources": ["arn:aws:s3:::bucket/predictions/*"],
                "conditions": [],
            }
        ],
    )

    assert "system:serviceaccount:ctr:ctr-worker" not in role.subjects()
    assert role.allows("s3:PutObject", "arn:aws:s3:::bucket/predictions/dt=1/part.parquet")
    assert not role.allows("s3:PutObject", "arn:aws:s3:::bucket/comparisons/part.parquet")
    assert not role.allows("s3:GetObject", "arn:aws:s3:::bucket/predictions/part.parquet")


def test_evaluator_rejects_unknown_values():
    evaluator = terraform("staging").evaluator
    platform = evaluator.instances["platform"]

    assert evaluator.expression(platform, "local.name") == "ctr-staging"
    assert evaluator.expression(platform, "module.scoring_roles.worker_role_arn").endswith(
        ":role/ctr-staging-worker"
    )
    with pytest.raises(UnresolvedValue):
        evaluator.expression(platform, "module.queue.kms_key_arn")
