"""The OCI labels of the platform's images, and the git facts they record.

A model image carries the standard ``org.opencontainers.image.*`` labels
(revision, created, source, base image) and the model's facts under
``ai.ctr.*``, so ``ctr image show``, ``skopeo inspect`` and the deploy
tooling can tell which model an image serves without unpacking it.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REVISION = "org.opencontainers.image.revision"
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
TITLE = "org.opencontainers.image.title"
BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"

MODEL_NAME = "ai.ctr.model.name"
MODEL_VERSION = "ai.ctr.model.version"
MODEL_URI = "ai.ctr.model.uri"
RUN_ID = "ai.ctr.mlflow.run_id"
BUNDLE_SHA256 = "ai.ctr.bundle.sha256"
MODEL_SHA256 = "ai.ctr.model.sha256"
RUNTIME_INPUTS = "ai.ctr.runtime.inputs"

MODEL_LABELS = (MODEL_NAME, MODEL_VERSION, RUN_ID, BUNDLE_SHA256, MODEL_SHA256)

# Used when neither CTR_SOURCE_URL nor a web URL of the git remote "origin" is known.
DEFAULT_SOURCE_URL = "https://example.invalid/ctr-platform"
UNKNOWN_COMMIT = "unknown"

_SCP_LIKE_REMOTE = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?P<path>[^/].*)$")


def _git(*args: str) -> str:
    completed = subprocess.run(["git", *args], cwd=Path(__file__).parent, check=True,
                               capture_output=True, text=True)
    return completed.stdout.strip()


def platform_commit() -> str:
    """Return the checked-out commit of the platform code (the code that bakes and serves), or ``unknown``."""
    try:
        return _git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN_COMMIT


def commit_time() -> int | None:
    """Return the commit time of the checked-out commit in seconds since the epoch, or None outside git."""
    try:
        return int(_git("show", "-s", "--format=%ct", "HEAD"))
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def uncommitted_changes() -> bool:
    """Tell whether the checkout has changes that the commit in an image tag would not show."""
    try:
        return bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return False


def source_url() -> str:
    """Return the web URL of the platform's repository for ``org.opencontainers.image.source``.

    ``CTR_SOURCE_URL`` wins; otherwise the git remote ``origin`` when it is an
    https URL or an scp-like ssh address (``git@host:org/repo.git``);
    otherwise a placeholder.
    """
    configured = os.environ.get("CTR_SOURCE_URL")
    if configured:
        return configured
    try:
        remote = _git("remote", "get-url", "origin")
    except (OSError, subprocess.CalledProcessError):
        return DEFAULT_SOURCE_URL
    if remote.startswith("https://"):
        return remote.removesuffix(".git")
    match = _SCP_LIKE_REMOTE.match(remote)
    if match and not remote.startswith("/"):
        return f"https://{match.group('host')}/{match.group('path').removesuffix('.git')}"
    return DEFAULT_SOURCE_URL


def rfc3339(seconds: int) -> str:
    """Format seconds since the epoch as the UTC time that ``created`` labels use."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ModelFacts:
    """The facts an image's labels record: the model it serves and how it was built."""

    model_name: str
    model_version: str
    run_id: str
    model_uri: str
    bundle_sha256: str
    model_sha256: str
    revision: str
    created: str
    source: str
    base_name: str
    base_digest: str

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> ModelFacts:
        return cls(
            model_name=labels.get(MODEL_NAME, ""),
            model_version=labels.get(MODEL_VERSION, ""),
            run_id=labels.get(RUN_ID, ""),
            model_uri=labels.get(MODEL_URI, ""),
            bundle_sha256=labels.get(BUNDLE_SHA256, ""),
            model_sha256=labels.get(MODEL_SHA256, ""),
            revision=labels.get(REVISION, ""),
            created=labels.get(CREATED, ""),
            source=labels.get(SOURCE, ""),
            base_name=labels.get(BASE_NAME, ""),
            base_digest=labels.get(BASE_DIGEST, ""),
        )

    def missing(self) -> list[str]:
        """Return the model labels that are absent or empty."""
        present = {MODEL_NAME: self.model_name, MODEL_VERSION: self.model_version, RUN_ID: self.run_id,
                   BUNDLE_SHA256: self.bundle_sha256, MODEL_SHA256: self.model_sha256}
        return [key for key in MODEL_LABELS if not present[key]]
