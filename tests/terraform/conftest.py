"""Fixtures for the Terraform tests: the terraform binary, an offline provider
mirror, a scratch copy of ``terraform/`` and the checkov command.

Nothing here touches the network. ``terraform init`` installs the AWS provider
from a filesystem mirror through a CLI configuration written to a temporary
directory, and runs in a copy of the tree so that ``.terraform/`` folders and
lock files never land in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tf_support import CHECKOV_DEFAULT, MIRROR_CANDIDATES, TERRAFORM_DIR, find_provider_mirror


@pytest.fixture(scope="session")
def terraform_bin() -> str:
    path = shutil.which("terraform")
    if path is None:
        pytest.skip("terraform is not installed: these tests need the terraform CLI on PATH")
    return path


@pytest.fixture(scope="session")
def provider_mirror() -> tuple[Path, str]:
    mirror = find_provider_mirror()
    override = os.environ.get("CTR_TF_PROVIDER_MIRROR")
    if mirror is None and override:
        pytest.skip(f"CTR_TF_PROVIDER_MIRROR={override} contains no hashicorp/aws provider")
    if mirror is None:
        pytest.skip(
            "no filesystem mirror of the hashicorp/aws provider was found (searched "
            f"{', '.join(str(path) for path in MIRROR_CANDIDATES)} and the whole filesystem); "
            "set CTR_TF_PROVIDER_MIRROR to a mirror directory to run the offline init tests"
        )
    return mirror


@pytest.fixture(scope="session")
def terraform_env(tmp_path_factory, provider_mirror) -> dict[str, str]:
    """Return the environment for terraform commands: the mirror only, no network, no prompts."""
    mirror_root, _ = provider_mirror
    config_dir = tmp_path_factory.mktemp("terraform-cli")
    cli_config = config_dir / "terraformrc.hcl"
    cli_config.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror_root}"\n'
        '    include = ["registry.terraform.io/hashicorp/aws"]\n'
        "  }\n"
        "  direct {\n"
        '    exclude = ["registry.terraform.io/*/*"]\n'
        "  }\n"
        "}\n"
    )
    environment = dict(os.environ)
    environment.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
    )
    environment.pop("TF_DATA_DIR", None)
    return environment


@pytest.fixture(scope="session")
def terraform_copy(tmp_path_factory) -> Path:
    """Return a scratch copy of terraform/ without working files."""
    target = tmp_path_factory.mktemp("terraform-tree") / "terraform"
    shutil.copytree(
        TERRAFORM_DIR,
        target,
        ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*"),
    )
    return target


@pytest.fixture(scope="session")
def terraform_init(terraform_bin, terraform_env, terraform_copy):
    """Return a function that runs ``terraform init -backend=false`` once per directory of the copy."""
    done: dict[Path, None] = {}

    def init(relative: str) -> Path:
        directory = terraform_copy / relative
        if directory in done:
            return directory
        result = subprocess.run(
            [terraform_bin, "init", "-backend=false", "-input=false", "-no-color"],
            cwd=directory,
            env=terraform_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, (
            f"terraform init failed in {relative}:\n{result.stdout}\n{result.stderr}"
        )
        done[directory] = None
        return directory

    return init


@pytest.fixture(scope="session")
def checkov_bin() -> Path:
    path = Path(os.environ.get("CTR_CHECKOV", CHECKOV_DEFAULT))
    if not path.exists():
        pytest.skip(
            f"checkov is not installed at {path}: scripts/bootstrap.sh installs it into its own "
            "virtual environment (it downgrades boto3, so it stays out of the project's lock)"
        )
    return path
