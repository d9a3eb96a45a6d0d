"""Invariants of the AWS infrastructure, read from the HCL with python-hcl2.

Values are resolved per environment through the module calls
(envs/<env> -> platform -> module), so a default that a module gets right but
an environment overrides wrongly still fails here.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import warnings

import pytest
import yaml
from tf_hcl import as_list, instances_of, load_module, module_instances, policy_statements
from tf_support import ENVIRONMENTS, REPO_ROOT, TERRAFORM_DIR

MODULES_DIR = TERRAFORM_DIR / "modules"
MODULE_DIRS = sorted(path for path in MODULES_DIR.iterdir() if path.is_dir())
MIN_RECEIVE_COUNT = 5
SCORING_DEADLINE_SECONDS = 3600
SQS_DEFAULT_RETENTION_SECONDS = 345600


def env_root(environment: str):
    return TERRAFORM_DIR / "envs" / environment


def all_scopes(environment: str):
    return list(module_instances(env_root(environment)).values())


def queue_scope(environment: str):
    (scope,) = instances_of(env_root(environment), MODULES_DIR / "queue")
    return scope


def as_int(value, where: str) -> int:
    assert isinstance(value, int | float) and not isinstance(value, bool), (
        f"{where} is {value!r}, not a number"
    )
    return int(value)


# Queues --------------------------------------------------------------------------------


def redrive_policies(module) -> dict[str, dict]:
    """Map each queue with a redrive policy to its dead-letter queue and maxReceiveCount expression."""
    policies = {}
    bodies = [
        (body["queue_url"], body["redrive_policy"])
        for body in module.resources_of_type("aws_sqs_queue_redrive_policy").values()
    ]
    bodies += [
        (f"${{aws_sqs_queue.{name}.id}}", body["redrive_policy"])
        for name, body in module.resources_of_type("aws_sqs_queue").items()
        if "redrive_policy" in body
    ]

    for queue_url, policy in bodies:
        source = re.search(r"aws_sqs_queue\.(\w+)\.(?:id|url)", queue_url).group(1)
        target = re.search(r"deadLetterTargetArn\s*=\s*aws_sqs_queue\.(\w+)\.arn", policy)
        count = re.search(r"maxReceiveCount\s*=\s*([\w.]+)", policy)
        assert target and count, (
            f"redrive policy of {source} in {module.path.name} is not a literal jsonencode: {policy}"
        )
        expression = count.group(1)
        policies[source] = {
            "dead_letter_queue": target.group(1),
            "max_receive_count": int(expression) if expression.isdigit() else f"${{{expression}}}",
        }
    return policies


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_queue_has_dead_letter_queue(environment):
    checked = []
    for scope in all_scopes(environment):
        queues = scope.module.resources_of_type("aws_sqs_queue")
        policies = redrive_policies(scope.module)
        dead_letter_queues = {policy["dead_letter_queue"] for policy in policies.values()}

        for name in queues:
            if name in dead_letter_queues:
                continue
            assert name in policies, f"queue {name} in {scope.address} has no redrive policy"
            assert policies[name]["dead_letter_queue"] in queues, (
                f"{name} redrives to a queue outside its module"
            )
            checked.append(f"{scope.address}.{name}")

    assert "platform.queue.scoring" in checked, (
        f"the scoring queue was not found; checked {checked}"
    )
    assert "platform.eks.karpenter_interruption" in checked, (
        f"Karpenter's queue was not found; checked {checked}"
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_max_receive_count_at_least_five(environment):
    for scope in all_scopes(environment):
        for queue, policy in redrive_policies(scope.module).items():
            count = as_int(
                scope.resolve(policy["max_receive_count"]),
                f"maxReceiveCount of {queue} in {scope.address}",
            )

            assert count >= MIN_RECEIVE_COUNT, (
                f"{scope.address}.{queue} moves messages to its dead-letter queue after {count} receives; "
                f"releases on shutdown count as receives, so it must be at least {MIN_RECEIVE_COUNT}"
            )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_dead_letter_queue_outlives_source_messages(environment):
    for scope in all_scopes(environment):
        queues = scope.module.resources_of_type("aws_sqs_queue")
        for source, policy in redrive_policies(scope.module).items():
            target = policy["dead_letter_queue"]
            source_retention = scope.resolve(
                queues[source].get("message_retention_seconds", SQS_DEFAULT_RETENTION_SECONDS)
            )
            target_retention = scope.resolve(
                queues[target].get("message_retention_seconds", SQS_DEFAULT_RETENTION_SECONDS)
            )

            assert as_int(target_retention, target) > as_int(source_retention, source), (
                f"{scope.address}: {target} keeps messages {target_retention} s, not longer than {source} "
                f"({source_retention} s); a moved message keeps its enqueue time and would expire early"
            )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_queue_encrypted(environment):
    for scope in all_scopes(environment):
        for name, queue in scope.module.resources_of_type("aws_sqs_queue").items():
            kms_key = queue.get("kms_master_key_id")
            sqs_managed = scope.resolve(queue.get("sqs_managed_sse_enabled", False))

            assert kms_key or sqs_managed is True, (
                f"queue {name} in {scope.address} has no server-side encryption"
            )


def render_kustomization(directory) -> str | None:
    """Render a kustomization with ``kubectl kustomize``; None when kubectl is missing or fails.

    A failed render belongs to the GitOps tests, so it warns here and the
    caller falls back to the next source.
    """
    kubectl = shutil.which("kubectl")
    if kubectl is None or not (directory / "kustomization.yaml").is_file():
        return None
    rendered = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if rendered.returncode != 0:
        warnings.warn(
            f"kubectl kustomize {directory} failed: {rendered.stderr.strip()}", stacklevel=2
        )
        return None
    return rendered.stdout


def configmap_heartbeat(environment: str) -> tuple[int, str] | None:
    """Return HEARTBEAT_SECONDS of the ctr-worker ConfigMap that GitOps deploys to ``environment``.

    The sources, in order: the environment's overlay rendered with ``kubectl
    kustomize``, the rendered base, and gitops/base/configmap.yaml as written.
    Returns None when none of them defines the key.
    """
    gitops = REPO_ROOT / "gitops"
    sources = []
    for directory in (gitops / "overlays" / environment, gitops / "base"):
        rendered = render_kustomization(directory)
        if rendered is not None:
            sources.append((rendered, f"kubectl kustomize {directory.relative_to(REPO_ROOT)}"))
    base_file = gitops / "base" / "configmap.yaml"
    if base_file.exists():
        sources.append((base_file.read_text(), str(base_file.relative_to(REPO_ROOT))))

    for text, origin in sources:
        for document in yaml.safe_load_all(text):
            if not isinstance(document, dict) or document.get("kind") != "ConfigMap":
                continue
            # configMapGenerator appends a content hash to the name.
            if not document.get("metadata", {}).get("name", "").startswith("ctr-worker"):
                continue
            heartbeat = (document.get("data") or {}).get("HEARTBEAT_SECONDS")
            if heartbeat is not None:
                return int(heartbeat), origin
    return None


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_visibility_timeout_covers_configmap_heartbeat(environment):
    found = configmap_heartbeat(environment)
    if found is None:
        pytest.skip(
            "no ctr-worker ConfigMap with HEARTBEAT_SECONDS in gitops/ yet: the visibility "
            "timeout is checked against the worker's built-in default only"
        )
    heartbeat, origin = found
    scope = queue_scope(environment)

    visibility = as_int(
        scope.resolve(
            scope.module.resources[("aws_sqs_queue", "scoring")]["visibility_timeout_seconds"]
        ),
        "visibility timeout",
    )
    terraform_heartbeat = as_int(
        scope.resolve("${var.worker_heartbeat_seconds}"), "worker_heartbeat_seconds"
    )

    assert visibility >= 3 * heartbeat, (
        f"{environment}: the scoring queue's visibility timeout is {visibility} s, less than three "
        f"heartbeats of {heartbeat} s ({origin})"
    )
    assert terraform_heartbeat == heartbeat, (
        f"{environment}: Terraform assumes a {terraform_heartbeat} s heartbeat, {origin} sets {heartbeat} s; "
        f"update worker_heartbeat_seconds in terraform/envs/{environment}/main.tf"
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_visibility_timeout_covers_worker_default_heartbeat(environment):
    from ctr_inference.worker import WorkerConfig

    defaults = {field.name: field.default for field in dataclasses.fields(WorkerConfig)}
    scope = queue_scope(environment)

    visibility = as_int(
        scope.resolve(
            scope.module.resources[("aws_sqs_queue", "scoring")]["visibility_timeout_seconds"]
        ),
        "visibility timeout",
    )

    assert visibility >= 3 * defaults["heartbeat_seconds"], (
        f"{environment}: visibility timeout {visibility} s is less than three of the worker's default "
        f"{defaults['heartbeat_seconds']} s heartbeats"
    )


# Buckets ---------------------------------------------------------------------------------


def covering_resources(module, resource_type: str, bucket_name: str, bucket: dict) -> list[dict]:
    """Return the ``resource_type`` resources that apply to every instance of ``aws_s3_bucket.<bucket_name>``."""
    pattern = re.compile(rf"aws_s3_bucket\.{bucket_name}[.\[]")
    matches = []
    for body in module.resources_of_type(resource_type).values():
        if not pattern.search(str(body.get("bucket", ""))):
            continue
        # A per-instance resource must iterate over the same collection as the bucket.
        if "for_each" in bucket and body.get("for_each") != bucket["for_each"]:
            continue
        matches.append(body)
    return matches


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=lambda path: path.name)
def test_every_bucket_encrypted(module_dir):
    module = load_module(module_dir)
    for name, bucket in module.resources_of_type("aws_s3_bucket").items():
        configs = covering_resources(
            module, "aws_s3_bucket_server_side_encryption_configuration", name, bucket
        )

        assert configs, (
            f"bucket {name} in {module_dir.name} has no default encryption for all its instances"
        )
        for config in configs:
            default = as_list(
                as_list(config["rule"])[0]["apply_server_side_encryption_by_default"]
            )[0]
            assert default["sse_algorithm"] in {"aws:kms", "AES256"}, (
                f"bucket {name}: {default['sse_algorithm']}"
            )
            if default["sse_algorithm"] == "aws:kms":
                assert default.get("kms_master_key_id"), (
                    f"bucket {name} uses SSE-KMS without its own key"
                )


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=lambda path: path.name)
def test_every_bucket_blocks_public_access(module_dir):
    module = load_module(module_dir)
    for name, bucket in module.resources_of_type("aws_s3_bucket").items():
        blocks = covering_resources(module, "aws_s3_bucket_public_access_block", name, bucket)

        assert blocks, (
            f"bucket {name} in {module_dir.name} has no public access block for all its instances"
        )
        for block in blocks:
            for setting in (
                "block_public_acls",
                "block_public_policy",
                "ignore_public_acls",
                "restrict_public_buckets",
            ):
                assert block.get(setting) is True, (
                    f"bucket {name}: {setting} is {block.get(setting)!r}"
                )


def test_irreplaceable_buckets_versioned():
    storage = load_module(MODULES_DIR / "storage")
    buckets = storage.locals["buckets"]
    versioning = storage.resources[("aws_s3_bucket_versioning", "data")]

    for purpose in ("raw-logs", "models", "mlflow-artifacts"):
        assert buckets[purpose]["versioned"] is True, f"the {purpose} bucket must be versioned"
    assert "settings.versioned" in versioning["for_each"], (
        "versioning must follow the buckets' versioned flag"
    )
    assert as_list(versioning["versioning_configuration"])[0]["status"] == "Enabled"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_old_predictions_expire(environment):
    (scope,) = instances_of(env_root(environment), MODULES_DIR / "storage")
    rules = scope.module.locals["lifecycle_rules"]["predictions"]

    expiring = [
        rule
        for rule in rules
        if rule["prefix"] == "predictions/" and rule["expiration_days"] is not None
    ]

    assert expiring, "no lifecycle rule expires objects under predictions/"
    days = as_int(scope.resolve(expiring[0]["expiration_days"]), "prediction expiration")
    assert 30 < days <= 400, f"{environment}: predictions expire after {days} days"


def test_current_model_bundles_never_expire():
    rules = load_module(MODULES_DIR / "storage").locals["lifecycle_rules"]

    for purpose in ("models", "mlflow-artifacts"):
        for rule in rules[purpose]:
            assert rule["expiration_days"] is None, (
                f"rule {rule['id']} expires current objects in {purpose}"
            )


# Registry --------------------------------------------------------------------------------


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=lambda path: path.name)
def test_ecr_tags_immutable_and_scanned(module_dir):
    module = load_module(module_dir)
    for name, repository in module.resources_of_type("aws_ecr_repository").items():
        assert repository.get("image_tag_mutability") == "IMMUTABLE", (
            f"repository {name} has mutable tags"
        )
        assert as_list(repository["image_scanning_configuration"])[0]["scan_on_push"] is True
        assert as_list(repository["encryption_configuration"])[0]["encryption_type"] == "KMS"


@dataclasses.dataclass(frozen=True)
class Image:
    digest: str
    tags: tuple[str, ...]
    age_days: float


def selected(selection: dict, image: Image) -> bool:
    """Tell whether a rule's tag selection matches an image: with tagPrefixList,
    every prefix must match one of the image's tags."""
    status = selection["tagStatus"]
    if status == "untagged":
        return not image.tags
    if status == "any":
        return True
    prefixes = selection.get("tagPrefixList", [])
    return bool(image.tags) and all(
        any(tag.startswith(prefix) for tag in image.tags) for prefix in prefixes
    )


def expire(rules: list[dict], images: list[Image]) -> set[str]:
    """Apply an ECR lifecycle policy as ECR documents it, and return the digests it expires.

    Rules run by ascending priority. An image that matches the tag selection of
    a rule cannot be expired by a rule of lower priority. A count rule still
    counts the images that a higher rule already expired.
    """
    expired: set[str] = set()
    sheltered: set[str] = set()
    for rule in sorted(rules, key=lambda rule: rule["rulePriority"]):
        selection = rule["selection"]
        matching = [image for image in images if selected(selection, image)]

        if selection["countType"] == "imageCountMoreThan":
            newest_first = sorted(matching, key=lambda image: image.age_days)
            candidates = newest_first[selection["countNumber"] :]
        else:
            candidates = [image for image in matching if image.age_days > selection["countNumber"]]

        expired |= {image.digest for image in candidates if image.digest not in sheltered}
        sheltered |= {image.digest for image in matching}
    return expired


def resolved_rules(scope) -> list[dict]:
    def resolve(value):
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return scope.resolve(value)

    return resolve(scope.module.locals["lifecycle_rules"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_ecr_lifecycle_rules_are_valid(environment):
    (scope,) = instances_of(env_root(environment), MODULES_DIR / "registry")
    rules = resolved_rules(scope)
    priorities = [rule["rulePriority"] for rule in rules]
    any_rules = [rule for rule in rules if rule["selection"]["tagStatus"] == "any"]

    assert len(set(priorities)) == len(priorities), f"duplicate rule priorities {priorities}"
    assert sum(rule["selection"]["tagStatus"] == "untagged" for rule in rules) <= 1
    for rule in any_rules:
        assert rule["rulePriority"] == max(priorities), (
            "a tagStatus any rule must have the highest priority value"
        )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_ecr_lifecycle_keeps_promoted_images(environment):
    (scope,) = instances_of(env_root(environment), MODULES_DIR / "registry")
    rules = resolved_rules(scope)
    keep = as_int(scope.resolve("${var.keep_promoted_images}"), "keep_promoted_images")
    prefix = scope.resolve("${var.promoted_tag_prefix}")
    unpromoted_days = as_int(scope.resolve("${var.unpromoted_image_retention_days}"), "retention")

    # Three years of weekly builds, every second one promoted; the newest is 1 day old.
    images = []
    for week in range(156):
        tag = f"ctr-v{156 - week}-{week:07x}"
        promoted = week % 2 == 0
        tags = (tag, f"{prefix}{tag}") if promoted else (tag,)
        images.append(Image(digest=f"sha256:{week:064x}", tags=tags, age_days=1 + 7 * week))
    images.append(Image(digest="sha256:" + "f" * 64, tags=(), age_days=30))

    expired = expire(rules, images)

    promoted = sorted(
        (image for image in images if any(tag.startswith(prefix) for tag in image.tags)),
        key=lambda image: image.age_days,
    )
    kept_promoted = [image for image in promoted if image.digest not in expired]
    assert kept_promoted == promoted[:keep], (
        f"{environment}: the policy keeps {len(kept_promoted)} promoted images, expected the newest {keep}"
    )
    for image in images:
        if (
            image.tags
            and not any(tag.startswith(prefix) for tag in image.tags)
            and image.age_days > unpromoted_days
        ):
            assert image.digest in expired, (
                f"unpromoted image {image.tags[0]} ({image.age_days} days) is kept"
            )
    assert "sha256:" + "f" * 64 in expired, "an old untagged image is kept"


def test_ecr_lifecycle_simulation_detects_unsheltered_promotions():
    # An "any" rule ahead of the promoted rule would expire promoted images by age.
    rules = [
        {
            "rulePriority": 1,
            "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countNumber": 30},
        },
        {
            "rulePriority": 2,
            "selection": {
                "tagStatus": "tagged",
                "tagPrefixList": ["promoted-"],
                "countType": "imageCountMoreThan",
                "countNumber": 100,
            },
        },
    ]
    old_promoted = Image(digest="sha256:1", tags=("ctr-v1-abc", "promoted-ctr-v1-abc"), age_days=90)

    assert expire(rules, [old_promoted]) == {"sha256:1"}


# Identities --------------------------------------------------------------------------------

IDENTITIES_DIR = MODULES_DIR / "identities"
WORKER_SQS_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
}
# An object ARN may end in a wildcard only below a fixed prefix, such as features/*.
SCOPED_OBJECT_ARN = re.compile(r"^\$\{var\.[a-z_]+\}/[a-z0-9-]+/\*$")


def policy_document(name: str) -> dict:
    return load_module(IDENTITIES_DIR).data[("aws_iam_policy_document", name)]


@pytest.mark.parametrize("document", ["worker", "keda", "worker_assume", "keda_assume"])
def test_worker_and_keda_policies_have_no_wildcards(document):
    for statement in policy_statements(policy_document(document)):
        sid = statement.get("sid", "?")
        for action in as_list(statement.get("actions")):
            assert "*" not in action, f"{document}/{sid}: wildcard action {action}"
        for resource in as_list(statement.get("resources")):
            if "*" in resource:
                assert SCOPED_OBJECT_ARN.match(resource), (
                    f"{document}/{sid}: wildcard resource {resource}"
                )
        for principal in as_list(statement.get("principals")):
            assert "*" not in as_list(principal["identifiers"]), (
                f"{document}/{sid}: wildcard principal"
            )


def test_worker_policy_documents_are_the_attached_ones():
    module = load_module(IDENTITIES_DIR)

    assert (
        module.resources[("aws_iam_role", "worker")]["assume_role_policy"]
        == "${data.aws_iam_policy_document.worker_assume.json}"
    )
    assert (
        module.resources[("aws_iam_role_policy", "worker")]["policy"]
        == "${data.aws_iam_policy_document.worker.json}"
    )
    assert (
        module.resources[("aws_iam_role", "keda")]["assume_role_policy"]
        == "${data.aws_iam_policy_document.keda_assume.json}"
    )
    assert (
        module.resources[("aws_iam_role_policy", "keda")]["policy"]
        == "${data.aws_iam_policy_document.keda.json}"
    )
    for attachment in module.resources_of_type("aws_iam_role_policy_attachment").values():
        assert "worker" not in attachment["role"], (
            f"a managed policy is attached to {attachment['role']}"
        )
        assert "keda" not in attachment["role"], (
            f"a managed policy is attached to {attachment['role']}"
        )


def test_worker_has_no_dead_letter_permission():
    identities = load_module(IDENTITIES_DIR)
    platform = load_module(MODULES_DIR / "platform")
    call = platform.module_calls["identities"]

    assert call["queue_arn"] == "${module.queue.queue_arn}", f"the worker gets {call['queue_arn']}"
    for argument, value in call.items():
        assert "dead_letter" not in str(value), (
            f"identities.{argument} passes a dead-letter queue: {value}"
        )
    for name in identities.variables:
        assert "dead_letter" not in name, f"identities has a variable {name}"
        assert "dlq" not in name, f"identities has a variable {name}"

    for statement in policy_statements(policy_document("worker")):
        sqs_actions = {
            action for action in as_list(statement["actions"]) if action.startswith("sqs:")
        }
        if sqs_actions:
            assert sqs_actions <= WORKER_SQS_ACTIONS, (
                f"worker SQS actions {sqs_actions - WORKER_SQS_ACTIONS}"
            )
            assert as_list(statement["resources"]) == ["${var.queue_arn}"], statement["resources"]


def test_worker_cannot_delete_data():
    for statement in policy_statements(policy_document("worker")):
        for action in as_list(statement["actions"]):
            assert not action.startswith(
                ("s3:Delete", "s3:PutBucket", "sqs:Purge", "sqs:Delete" + "Queue")
            ), action


def test_keda_assumes_only_worker_role():
    (statement,) = policy_statements(policy_document("keda"))

    assert as_list(statement["actions"]) == ["sts:AssumeRole"]
    assert as_list(statement["resources"]) == ["${aws_iam_role.worker.arn}"]


def test_worker_role_trusts_worker_and_keda_only():
    subjects, aws_principals = set(), set()
    for statement in policy_statements(policy_document("worker_assume")):
        for principal in as_list(statement["principals"]):
            if principal["type"] == "AWS":
                aws_principals |= set(as_list(principal["identifiers"]))
        for condition in as_list(statement.get("condition")):
            if condition["variable"].endswith(":sub"):
                assert condition["test"] == "StringEquals", "the subject must match exactly"
                subjects |= set(as_list(condition["values"]))

    assert subjects == {"${local.worker_subject}", "${local.keda_subject}"}
    assert aws_principals == {"${aws_iam_role.keda.arn}"}


def test_every_web_identity_statement_checks_subject_and_audience():
    module = load_module(IDENTITIES_DIR)
    for name, document in module.data_of_type("aws_iam_policy_document").items():
        for statement in policy_statements(document):
            if "sts:AssumeRoleWithWebIdentity" not in as_list(statement.get("actions")):
                continue
            variables = {
                condition["variable"].rsplit(":", 1)[-1]
                for condition in as_list(statement.get("condition"))
            }
            assert {"sub", "aud"} <= variables, (
                f"{name}/{statement.get('sid')} checks only {variables}"
            )


# Alarms and notifications --------------------------------------------------------------------


def alarms_by_metric() -> dict[str, dict]:
    alarms = load_module(MODULES_DIR / "alarms").resources_of_type("aws_cloudwatch_metric_alarm")
    return {alarm["metric_name"]: alarm for alarm in alarms.values()}


def test_dead_letter_alarm_present():
    alarm = alarms_by_metric()["ApproximateNumberOfMessagesVisible"]
    call = load_module(MODULES_DIR / "platform").module_calls["alarms"]

    assert alarm["namespace"] == "AWS/SQS"
    assert alarm["dimensions"] == {"QueueName": "${var.dead_letter_queue_name}"}
    assert alarm["comparison_operator"] == "GreaterThanThreshold"
    assert alarm["threshold"] == 0
    assert alarm["alarm_actions"], "the dead-letter alarm notifies nobody"
    assert call["dead_letter_queue_name"] == "${module.queue.dead_letter_queue_name}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_oldest_message_alarm_before_deadline(environment):
    alarm = alarms_by_metric()["ApproximateAgeOfOldestMessage"]
    (scope,) = instances_of(env_root(environment), MODULES_DIR / "alarms")
    threshold = as_int(scope.resolve(alarm["threshold"]), "alarm threshold")
    deadline = as_int(scope.resolve("${var.deadline_seconds}"), "deadline")

    assert alarm["namespace"] == "AWS/SQS"
    assert alarm["dimensions"] == {"QueueName": "${var.queue_name}"}
    assert alarm["comparison_operator"].startswith("GreaterThan")
    assert alarm["alarm_actions"], "the deadline alarm notifies nobody"
    assert deadline == SCORING_DEADLINE_SECONDS, f"{environment}: deadline {deadline} s"
    assert deadline / 2 <= threshold < deadline, (
        f"{environment}: fires at {threshold} s of a {deadline} s deadline"
    )
    assert scope.arguments["queue_name"] == "${module.queue.queue_name}"


def test_only_incoming_prefix_notifies_queue():
    notifications = [
        (module_dir.name, body)
        for module_dir in MODULE_DIRS
        for body in load_module(module_dir).resources_of_type("aws_s3_bucket_notification").values()
    ]
    queue_module = load_module(MODULES_DIR / "queue")

    assert [module for module, _ in notifications] == ["queue"], notifications
    (_, notification) = notifications[0]
    assert "lambda_function" not in notification
    assert "topic" not in notification
    for queue in as_list(notification["queue"]):
        prefix = queue_module.locals[
            queue["filter_prefix"].removeprefix("${local.").removesuffix("}")
        ]
        assert prefix == "incoming/"
        assert all(event.startswith("s3:ObjectCreated:") for event in as_list(queue["events"]))


def test_queue_policy_admits_only_feature_bucket():
    queue_module = load_module(MODULES_DIR / "queue")
    statements = policy_statements(queue_module.data[("aws_iam_policy_document", "scoring_queue")])
    allows = [statement for statement in statements if statement.get("effect", "Allow") == "Allow"]

    assert len(allows) == 1, "the scoring queue policy must allow exactly one sender"
    (allow,) = allows
    assert as_list(allow["actions"]) == ["sqs:SendMessage"]
    assert as_list(allow["principals"]) == [
        {"type": "Service", "identifiers": ["s3.amazonaws.com"]}
    ]
    conditions = {
        condition["variable"]: as_list(condition["values"])
        for condition in as_list(allow["condition"])
    }
    assert conditions["aws:SourceArn"] == ["${local.features_bucket_arn}"]
    assert "aws:SourceAccount" in conditions
    assert (
        load_module(MODULES_DIR / "platform").module_calls["queue"]["features_bucket_name"]
        == "${module.storage.features_bucket}"
    )
