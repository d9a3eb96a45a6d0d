"""Paths and helpers shared by the Terraform tests: where terraform/ is, and how
to find an offline mirror of the AWS provider and check its version."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "terraform"
ENVIRONMENTS = ("staging", "prod")

# Where machine images usually keep provider mirrors; CTR_TF_PROVIDER_MIRROR
# overrides the list. The last resort is a search of the whole filesystem.
MIRROR_CANDIDATES = (
    Path("/opt/tf-plugins"),
    Path.home() / ".terraform.d" / "plugins",
    Path("/usr/local/share/terraform/plugins"),
    Path("/usr/share/terraform/plugins"),
)
PROVIDER_GLOB = "terraform-provider-aws_*"
FILESYSTEM_SEARCH_TIMEOUT_SECONDS = 120

CHECKOV_DEFAULT = REPO_ROOT / ".cache" / "checkov-venv" / "bin" / "checkov"


def _mirror_root(provider_file: Path) -> Path | None:
    """Return the mirror directory above ``registry.terraform.io`` for a provider file."""
    for parent in provider_file.parents:
        if parent.name == "registry.terraform.io":
            return parent.parent
    return None


def _provider_version(provider_file: Path) -> str | None:
    """Read the version from an unpacked (``terraform-provider-aws_v5.1.0_x5``) or
    packed (``terraform-provider-aws_5.1.0_linux_amd64.zip``) provider file name."""
    match = re.match(r"terraform-provider-aws_v?(\d+\.\d+\.\d+)", provider_file.name)
    return match.group(1) if match else None


def _search_filesystem() -> list[Path]:
    command = [
        "find",
        "/",
        "(",
        "-path",
        "/proc",
        "-o",
        "-path",
        "/sys",
        "-o",
        "-path",
        "/dev",
        ")",
        "-prune",
        "-o",
        "-name",
        PROVIDER_GLOB,
        "-print",
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=FILESYSTEM_SEARCH_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return []
    return [Path(line) for line in result.stdout.splitlines() if line]


def find_provider_mirror() -> tuple[Path, str] | None:
    """Return the root and version of a filesystem mirror that contains hashicorp/aws, or None."""
    override = os.environ.get("CTR_TF_PROVIDER_MIRROR")
    candidates = [Path(override)] if override else list(MIRROR_CANDIDATES)

    provider_files = []
    for root in candidates:
        aws_dir = root / "registry.terraform.io" / "hashicorp" / "aws"
        if aws_dir.is_dir():
            provider_files.extend(aws_dir.rglob(PROVIDER_GLOB))
    if not provider_files and not override:
        provider_files = _search_filesystem()

    for provider_file in sorted(provider_files, reverse=True):
        root = _mirror_root(provider_file)
        version = _provider_version(provider_file)
        if root is not None and version is not None:
            return root, version
    return None


def _parse_version(text: str) -> tuple[int, int, int]:
    parts = [int(part) for part in text.strip().split(".")]
    return tuple((parts + [0, 0, 0])[:3])


def version_satisfies(version: str, constraint: str) -> bool:
    """Check a version against a Terraform constraint string such as ``>= 5.95, < 6.0``.

    Raises:
        ValueError: a clause of the constraint is not ``<operator> <version>``.
    """
    actual = _parse_version(version)
    for clause in constraint.split(","):
        match = re.fullmatch(r"\s*(>=|<=|!=|~>|=|>|<)?\s*(\d+(?:\.\d+){0,2})\s*", clause)
        if match is None:
            raise ValueError(f"invalid version constraint clause {clause!r} in {constraint!r}")
        operator, bound = match.group(1) or "=", match.group(2)
        wanted = _parse_version(bound)

        if operator == "~>":
            # ~> 5.95 allows 5.95 up to, not including, 6.0; ~> 5.95.1 stops below 5.96.
            significant = len(bound.split("."))
            upper = list(wanted[: max(significant - 1, 1)])
            upper[-1] += 1
            satisfied = actual >= wanted and actual[: len(upper)] < tuple(upper)
        else:
            satisfied = {
                ">=": actual >= wanted,
                "<=": actual <= wanted,
                ">": actual > wanted,
                "<": actual < wanted,
                "=": actual == wanted,
                "!=": actual != wanted,
            }[operator]
        if not satisfied:
            return False
    return True
