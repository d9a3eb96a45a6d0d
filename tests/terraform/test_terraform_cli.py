"""The Terraform CLI over terraform/: formatting, offline init and validate of
every environment, and the ``terraform test`` suites that run against a
mocked AWS provider."""

from __future__ import annotations

import json
import subprocess

import pytest
from tf_hcl import load_module
from tf_support import ENVIRONMENTS, TERRAFORM_DIR, version_satisfies

TEST_SUITE_DIRS = sorted(
    {
        str(path.parent.parent.relative_to(TERRAFORM_DIR))
        for path in TERRAFORM_DIR.glob("**/tests/*.tftest.hcl")
        if ".terraform" not in path.parts
    }
)


def run_terraform(terraform_bin, env, cwd, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [terraform_bin, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_fmt_is_clean(terraform_bin):
    # fmt needs no provider, so it runs on the repository itself and only reads.
    command = [
        terraform_bin,
        "fmt",
        "-check",
        "-recursive",
        "-diff",
        "-no-color",
        str(TERRAFORM_DIR),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, (
        f"terraform fmt found unformatted files; run `terraform fmt -recursive terraform`:\n{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_mirror_satisfies_provider_constraint(environment, provider_mirror):
    _, mirror_version = provider_mirror
    root = load_module((TERRAFORM_DIR / "envs" / environment).resolve())
    constraint = root.terraform_blocks[0]["required_providers"][0]["aws"]["version"]

    assert version_satisfies(mirror_version, constraint), (
        f"the provider mirror holds hashicorp/aws {mirror_version}, which does not satisfy "
        f"{constraint!r} in envs/{environment}/versions.tf"
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_validates_offline(environment, terraform_bin, terraform_env, terraform_init):
    directory = terraform_init(f"envs/{environment}")

    result = run_terraform(
        terraform_bin, terraform_env, directory, "validate", "-json", "-no-color"
    )
    report = json.loads(result.stdout)
    diagnostics = "\n".join(
        f"{item['severity']}: {item['summary']}: {item.get('detail', '')}"
        for item in report.get("diagnostics", [])
    )

    assert report["valid"], f"envs/{environment} is invalid:\n{diagnostics}"
    assert report["warning_count"] == 0, (
        f"envs/{environment} validates with warnings:\n{diagnostics}"
    )


@pytest.mark.parametrize("suite_dir", TEST_SUITE_DIRS)
def test_terraform_test_suite_passes(suite_dir, terraform_bin, terraform_env, terraform_init):
    directory = terraform_init(suite_dir)

    result = run_terraform(
        terraform_bin, terraform_env, directory, "test", "-no-color", timeout=600
    )

    assert result.returncode == 0, (
        f"terraform test failed in {suite_dir}:\n{result.stdout}\n{result.stderr}"
    )
    assert "0 failed" in result.stdout, result.stdout


def test_every_environment_has_a_test_suite():
    missing = [
        environment for environment in ENVIRONMENTS if f"envs/{environment}" not in TEST_SUITE_DIRS
    ]

    assert not missing, f"environments without tests/*.tftest.hcl: {missing}"
