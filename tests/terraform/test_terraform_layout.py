"""Conventions of terraform/: the four files of every module, documented
variables and outputs, only the hashicorp/aws provider, thin environment roots
with locked remote state, and the outputs that the GitOps overlays need."""

from __future__ import annotations

import re

import pytest
from tf_hcl import as_list, load_module
from tf_support import ENVIRONMENTS, TERRAFORM_DIR

MODULES_DIR = TERRAFORM_DIR / "modules"
MODULE_DIRS = sorted(path for path in MODULES_DIR.iterdir() if path.is_dir())
ENV_DIRS = [TERRAFORM_DIR / "envs" / environment for environment in ENVIRONMENTS]
ALL_DIRS = MODULE_DIRS + ENV_DIRS
REQUIRED_MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")
EXPECTED_MODULES = {
    "network",
    "eks",
    "queue",
    "storage",
    "registry",
    "identities",
    "alarms",
    "platform",
}

# What the GitOps overlays, Karpenter, KEDA and the pipeline read from Terraform.
GITOPS_OUTPUTS = {
    "queue_url",
    "dead_letter_queue_url",
    "worker_role_arn",
    "keda_role_arn",
    "karpenter_controller_role_arn",
    "karpenter_node_role_name",
    "karpenter_interruption_queue_name",
    "cluster_name",
    "cluster_endpoint",
    "bucket_names",
    "model_store_uri",
    "registry_url",
    "ci_role_arn",
    "worker_config",
}


def directory_id(path):
    return str(path.relative_to(TERRAFORM_DIR))


def test_expected_modules_exist():
    assert {path.name for path in MODULE_DIRS} == EXPECTED_MODULES


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=directory_id)
def test_module_has_standard_files(module_dir):
    missing = [name for name in REQUIRED_MODULE_FILES if not (module_dir / name).is_file()]

    assert not missing, f"{module_dir.name} lacks {missing}"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=directory_id)
def test_variables_have_type_and_description(directory):
    for name, variable in load_module(directory).variables.items():
        assert variable.get("type"), f"variable {name} in {directory_id(directory)} has no type"
        assert str(variable.get("description", "")).strip(), (
            f"variable {name} in {directory_id(directory)} has no description"
        )


@pytest.mark.parametrize("directory", ALL_DIRS, ids=directory_id)
def test_outputs_have_description(directory):
    for name, output in load_module(directory).outputs.items():
        assert str(output.get("description", "")).strip(), (
            f"output {name} in {directory_id(directory)} has no description"
        )


@pytest.mark.parametrize("directory", ALL_DIRS, ids=directory_id)
def test_only_hashicorp_aws_provider(directory):
    config = load_module(directory)
    (terraform_block,) = config.terraform_blocks
    providers = {}
    for block in as_list(terraform_block["required_providers"]):
        providers.update(block)

    assert terraform_block.get("required_version"), (
        f"{directory_id(directory)} does not pin Terraform"
    )
    assert set(providers) == {"aws"}, f"{directory_id(directory)} requires {sorted(providers)}"
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert re.search(r"<\s*\d", providers["aws"]["version"]), (
        "the aws provider needs an upper bound"
    )
    kinds = [kind for kind, _ in config.resources] + [kind for kind, _ in config.data]
    assert all(kind.startswith("aws_") for kind in kinds), (
        f"non-AWS types in {directory_id(directory)}: {[kind for kind in kinds if not kind.startswith('aws_')]}"
    )


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=directory_id)
def test_modules_configure_no_provider(module_dir):
    assert not load_module(module_dir).providers, (
        f"{module_dir.name} configures a provider; only environment roots may"
    )


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=directory_id)
def test_environment_state_is_remote_and_locked(env_dir):
    (terraform_block,) = load_module(env_dir).terraform_blocks
    (backend,) = as_list(terraform_block["backend"])

    assert set(backend) == {"s3"}, f"{env_dir.name} uses backend {sorted(backend)}"
    settings = backend["s3"]
    assert settings["use_lockfile"] is True, "state locking (use_lockfile) must be on"
    assert settings["encrypt"] is True
    assert env_dir.name in settings["key"], (
        f"state key {settings['key']} does not name the environment"
    )
    assert (env_dir / "backend.hcl").is_file(), "backend.hcl with the state bucket is missing"


def test_environment_state_keys_differ():
    keys = [
        as_list(load_module(env_dir).terraform_blocks[0]["backend"])[0]["s3"]["key"]
        for env_dir in ENV_DIRS
    ]

    assert len(set(keys)) == len(keys), f"environments share a state key: {keys}"


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=directory_id)
def test_environment_is_thin(env_dir):
    config = load_module(env_dir)

    assert not config.resources, f"{env_dir.name} defines resources; they belong in modules"
    assert list(config.module_calls) == ["platform"], sorted(config.module_calls)
    assert config.module_calls["platform"]["environment"] == env_dir.name
    assert re.fullmatch(r"1\.\d+", config.module_calls["platform"]["kubernetes_version"]), (
        "the Kubernetes version must be pinned to a minor version literal"
    )


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=directory_id)
def test_environment_exports_gitops_outputs(env_dir):
    outputs = load_module(env_dir).outputs

    missing = GITOPS_OUTPUTS - set(outputs)
    assert not missing, f"{env_dir.name} lacks outputs {sorted(missing)}"
    for name in GITOPS_OUTPUTS:
        assert outputs[name]["value"] == f"${{module.platform.{name}}}", (
            f"{env_dir.name} output {name}"
        )


def test_environments_export_the_same_outputs():
    names = [set(load_module(env_dir).outputs) for env_dir in ENV_DIRS]

    assert all(outputs == names[0] for outputs in names), names


def test_network_keeps_scoring_traffic_off_nat():
    network = load_module(MODULES_DIR / "network")
    services = network.variables["interface_endpoint_services"]["default"]
    gateway = network.resources[("aws_vpc_endpoint", "s3")]

    assert {"sqs", "ecr.api", "ecr.dkr"} <= set(services), services
    assert gateway["vpc_endpoint_type"] == "Gateway"
    assert gateway["route_table_ids"] == "${aws_route_table.private[*].id}"


def test_private_subnets_tagged_for_karpenter():
    subnet = load_module(MODULES_DIR / "network").resources[("aws_subnet", "private")]

    assert '"karpenter.sh/discovery" = var.cluster_name' in subnet["tags"], subnet["tags"]


def test_cluster_security_group_tagged_for_karpenter():
    tag = load_module(MODULES_DIR / "eks").resources[
        ("aws_ec2_tag", "cluster_security_group_discovery")
    ]

    assert tag["key"] == "karpenter.sh/discovery"
    assert tag["value"] == "${var.cluster_name}"


def test_karpenter_interruption_events_reach_queue():
    eks = load_module(MODULES_DIR / "eks")
    events = eks.locals["karpenter_events"]
    sources = {detail_type for event in events.values() for detail_type in event["detail-type"]}

    assert {
        "AWS Health Event",
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
    } <= sources
    target = eks.resources[("aws_cloudwatch_event_target", "karpenter")]
    assert target["arn"] == "${aws_sqs_queue.karpenter_interruption.arn}"
