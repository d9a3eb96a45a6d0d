"""The CircleCI pipeline: valid configs, path filtering, and only commands that exist."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gitops_support import REPO_ROOT

CIRCLECI = REPO_ROOT / ".circleci"
MAKEFILE = REPO_ROOT / "Makefile"
BIN = Path(sys.executable).parent

# ctr commands that the pipeline calls and that other parts of the platform
# are still building. Each entry leaves this list once its command is
# registered in ctr/cli.py.
PENDING_COMMANDS: set[tuple[str, ...]] = set()

# Files a push may change, and the pipeline parameters path filtering sets.
PATH_CASES = [
    (["training/ctr_training/train.py"], {"run-train"}),
    (["params.yaml"], {"run-train"}),
    (["data/criteo_day_0.dvc"], {"run-train"}),
    (["dvc.yaml"], {"run-train"}),
    (["inference/ctr_inference/worker.py"], {"run-image"}),
    (["model-images/Dockerfile.runtime"], {"run-image"}),
    (["gitops/overlays/prod/kustomization.yaml"], {"run-gitops"}),
    (["gitops/base/configmap.yaml", "gitops/README.md"], {"run-gitops"}),
    (["ctr/deploy/status.py"], {"run-tests"}),
    (["README.md"], set()),
]
# The workflows each set of parameters starts.
WORKFLOW_CASES = [
    ({"run-train"}, {"retrain"}),
    ({"run-train", "run-image"}, {"retrain"}),
    ({"run-image"}, {"rebake"}),
    ({"run-gitops"}, {"validate"}),
    ({"run-tests"}, {"test"}),
    ({"run-tests", "run-gitops"}, {"test", "validate"}),
    (set(), set()),
]


def load(name: str) -> dict:
    return yaml.safe_load((CIRCLECI / name).read_text())


def mapping_lines() -> list[tuple[str, str, str]]:
    config = load("config.yml")
    (job,) = config["workflows"]["choose-jobs"]["jobs"]
    lines = job["path-filtering/filter"]["mapping"].strip().splitlines()
    return [tuple(line.split()) for line in lines]


def parameters_for(paths: list[str]) -> set[str]:
    # NOTE: assumes the orb matches each regular expression against the whole path.
    return {parameter for regex, parameter, value in mapping_lines()
            if value == "true" and any(re.fullmatch(regex, path) for path in paths)}


def evaluate(condition, parameters: set[str]) -> bool:
    """Evaluate a CircleCI ``when`` condition over boolean pipeline parameters."""
    if isinstance(condition, str):
        match = re.fullmatch(r"<<\s*pipeline\.parameters\.([\w-]+)\s*>>", condition.strip())
        assert match, f"unexpected condition {condition!r}"
        return match.group(1) in parameters
    if isinstance(condition, bool):
        return condition
    (operator, operand), = condition.items()
    if operator == "and":
        return all(evaluate(c, parameters) for c in operand)
    if operator == "or":
        return any(evaluate(c, parameters) for c in operand)
    if operator == "not":
        return not evaluate(operand, parameters)
    raise AssertionError(f"unexpected operator {operator}")


def workflows_for(parameters: set[str]) -> set[str]:
    workflows = load("continue_config.yml")["workflows"]
    return {name for name, workflow in workflows.items() if evaluate(workflow.get("when", True), parameters)}


def run_commands() -> list[str]:
    """Return every shell command of the continued config's jobs and commands."""
    config = load("continue_config.yml")
    commands = []
    for section in ("jobs", "commands"):
        for definition in config.get(section, {}).values():
            for step in definition.get("steps", []):
                if isinstance(step, dict) and "run" in step:
                    run = step["run"]
                    commands.append(run if isinstance(run, str) else run["command"])
    return commands


def make_targets_in(command: str) -> list[str]:
    targets = []
    for segment in re.split(r"&&|\|\||;|\n", command):
        words = shlex.split(re.sub(r"<<[^>]*>>", "X", segment))
        if words[:1] == ["make"]:
            targets.extend(w for w in words[1:] if "=" not in w and not w.startswith("-"))
    return targets


def makefile_rules() -> dict[str, list[str]]:
    """Return each Makefile target and its recipe lines."""
    rules, current = {}, None
    for line in MAKEFILE.read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.-]+):(?!=)", line)
        if rule:
            current = rule.group(1)
            rules[current] = []
        elif line.startswith("\t") and current:
            rules[current].append(line.strip())
        elif line.strip() and not line.startswith("#"):
            current = None
    return rules


def ctr_commands_in(text: str) -> set[tuple[str, ...]]:
    """Return (command, subcommand) pairs of ctr invocations in ``text``.

    An invocation is ``$(CTR)`` in a Makefile, ``…/bin/ctr`` in a script, or
    ``ctr`` at the start of a shell command. A bare word "ctr" elsewhere (a
    folder name) is not one.
    """
    found = set()
    pattern = r"(?:\$\(CTR\)|/bin/ctr\"?|(?:^|[;&|]\s*)ctr)[ \t]+([a-z][\w-]*)(?:[ \t]+([a-z][\w-]*))?"
    for match in re.finditer(pattern, text, re.MULTILINE):
        found.add(tuple(part for part in match.groups() if part))
    return found


def registered_commands() -> set[tuple[str, ...]]:
    """Return the ``ctr`` commands and subcommands that importable command modules register."""
    from ctr.cli import COMMAND_MODULES

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ctr.commands.{name}")
        except ModuleNotFoundError:
            continue
        module.register(subparsers)
    found = set()
    for command, subparser in subparsers.choices.items():
        found.add((command,))
        for action in subparser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.update((command, sub) for sub in action.choices)
    return found


# Tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.yml", "continue_config.yml"])
def test_config_validates(name):
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.circle-ci",
                             str(CIRCLECI / name)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_setup_filters_against_base_revision():
    config = load("config.yml")
    (job,) = config["workflows"]["choose-jobs"]["jobs"]
    settings = job["path-filtering/filter"]

    assert config["setup"] is True
    assert config["orbs"]["path-filtering"].startswith("circleci/path-filtering@")
    assert settings["base-revision"] == "<< pipeline.git.base_revision >>"
    assert settings["config-path"] == ".circleci/continue_config.yml"


def test_mapping_sets_declared_parameters():
    declared = set(load("continue_config.yml")["parameters"])

    assert {parameter for _, parameter, _ in mapping_lines()} <= declared


@pytest.mark.parametrize(("paths", "expected"), PATH_CASES)
def test_changed_paths_select_parameters(paths, expected):
    assert parameters_for(paths) == expected


@pytest.mark.parametrize(("parameters", "expected"), WORKFLOW_CASES)
def test_parameters_select_workflows(parameters, expected):
    assert workflows_for(parameters) == expected


def test_gitops_only_change_runs_validation_only():
    workflows = load("continue_config.yml")["workflows"]
    (selected,) = workflows_for(parameters_for(["gitops/overlays/staging/kustomization.yaml"]))
    jobs = [next(iter(j)) if isinstance(j, dict) else j for j in workflows[selected]["jobs"]]

    assert jobs == ["validate-gitops"]


def test_delivery_workflows_promote_through_approval():
    workflows = load("continue_config.yml")["workflows"]
    for name in ("retrain", "rebake"):
        jobs = {}
        for entry in workflows[name]["jobs"]:
            job, settings = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            jobs[settings.get("name", job)] = settings
        assert jobs["approve-prod"]["type"] == "approval"
        assert jobs["approve-prod"]["requires"] == ["promote-staging"]
        assert jobs["promote-prod"]["requires"] == ["approve-prod"]
        assert jobs["promote-staging"]["environment"] == "staging"
        assert jobs["promote-prod"]["environment"] == "prod"


def test_aws_jobs_use_oidc_not_keys():
    text = (CIRCLECI / "continue_config.yml").read_text()
    config = load("continue_config.yml")
    aws_jobs = {"train", "bake-and-push", "promote"}

    assert "AWS_ACCESS_KEY_ID" not in text
    assert "AWS_SECRET_ACCESS_KEY" not in text
    for job in aws_jobs:
        commands = " ".join(s["run"]["command"] for s in config["jobs"][job]["steps"]
                            if isinstance(s, dict) and "run" in s)
        assert "ci-aws-identity" in make_targets_in(commands), job
    for workflow in config["workflows"].values():
        for entry in workflow["jobs"]:
            job, settings = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            if job in aws_jobs:
                assert settings.get("context") == "ctr-aws", f"{job} needs a context for its OIDC token"


def test_every_make_target_exists():
    rules = makefile_rules()
    targets = {t for command in run_commands() for t in make_targets_in(command)}

    assert targets, "the pipeline calls no make target"
    assert targets <= set(rules), f"missing Makefile targets: {targets - set(rules)}"


def test_every_ctr_command_exists():
    rules = makefile_rules()
    targets = {t for command in run_commands() for t in make_targets_in(command)}
    targets.add("ci-local")
    called = set()
    for command in run_commands():
        called |= ctr_commands_in(command)
    for target in targets:
        called |= ctr_commands_in("\n".join(rules.get(target, [])))
    called |= ctr_commands_in((REPO_ROOT / "scripts" / "ci-local.sh").read_text())
    registered = registered_commands()

    assert ("deploy", "promote") in called
    missing = {c for c in called if c not in registered and c[:1] not in registered} - PENDING_COMMANDS
    assert not missing, f"ctr commands the pipeline calls but the CLI lacks: {missing}"
    for command in called:
        assert command in registered or command in PENDING_COMMANDS, command


def test_deploy_is_a_registered_module():
    from ctr.cli import COMMAND_MODULES

    assert "deploy" in COMMAND_MODULES
    assert {("deploy", "promote"), ("deploy", "history"), ("deploy", "rollback"),
            ("deploy", "status")} <= registered_commands()


def test_pipeline_commits_skip_ci():
    from ctr.deploy.images import parse_image_reference
    from ctr.deploy.promotions import ModelFacts, promotion_message

    image = parse_image_reference("127.0.0.1:5000/ctr-model:ctr-criteo-v4-1a2b3c4@sha256:" + "a" * 64)
    subject = promotion_message("staging", image, ModelFacts("ctr-criteo", "4", "run")).splitlines()[0]
    dvc_commit = [line for line in makefile_rules()["pipeline-train"] if "git commit" in line]

    assert "[skip ci]" in subject
    assert dvc_commit and all("[skip ci]" in line for line in dvc_commit)
