"""The training image's Dockerfile: hadolint, and what the Job relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "training" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_passes():
    completed = subprocess.run([str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_image_runs_pipeline_as_non_root():
    text = DOCKERFILE.read_text()
    assert "openjdk-17-jre-headless" in text
    assert "uv sync --frozen --no-default-groups" in text
    assert "USER 10001:10001" in text
    assert "PATH=/opt/ctr/repo/.venv/bin:$PATH" in text
    assert 'CMD ["dvc", "repro"]' in text


def test_context_leaves_out_local_state():
    ignored = set((REPO_ROOT / "training" / "Dockerfile.dockerignore").read_text().splitlines())
    for entry in (".venv", ".dvc/cache", "dvc-remote", ".ctr", "data/features"):
        assert entry in ignored, entry
    assert ".git" not in ignored
