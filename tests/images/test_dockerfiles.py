"""The Dockerfiles pass hadolint and keep the properties the image builds rely on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCKERFILES = REPO_ROOT / "model-images"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)


def instructions(path: Path) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


@pytest.mark.parametrize("name", ["runtime.Dockerfile", "model.Dockerfile"])
def test_hadolint_passes(name):
    completed = hadolint(DOCKERFILES / name)

    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")

    completed = hadolint(bad)

    assert completed.returncode != 0
    assert "DL3006" in completed.stdout


def test_runtime_is_multi_stage_on_base_argument():
    builder, final = stages(DOCKERFILES / "runtime.Dockerfile")

    assert builder[0] == ("FROM", "${BASE_IMAGE} AS builder")
    assert final[0] == ("FROM", "${BASE_IMAGE}")


def test_runtime_installs_only_from_local_wheels():
    builder, _ = stages(DOCKERFILES / "runtime.Dockerfile")
    run = " ".join(rest for keyword, rest in builder if keyword == "RUN")

    assert run.count("pip\" install") == 2
    assert run.count("--no-index") == 2
    assert "--require-hashes" in run
    assert "requirements.txt" in run


def test_runtime_final_stage_is_lean():
    _, final = stages(DOCKERFILES / "runtime.Dockerfile")
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    users = [rest for keyword, rest in final if keyword == "USER"]

    for tool in ("pip", "apt-get", "gcc", "make", "build-essential"):
        assert tool not in runs, tool
    assert users == ["10001:10001"]
    assert ("COPY", "--from=builder /opt/ctr/venv /opt/ctr/venv") in final
    assert ("ENTRYPOINT", '["/opt/ctr/venv/bin/ctr-worker"]') in final


def test_model_adds_only_the_bundle():
    (stage,) = stages(DOCKERFILES / "model.Dockerfile")
    keywords = [keyword for keyword, _ in stage]

    assert stage[0] == ("FROM", "${RUNTIME_IMAGE}")
    assert keywords.count("COPY") == 1
    assert "RUN" not in keywords
    assert "ADD" not in keywords
    assert ("COPY", "--chown=0:0 bundle/ /opt/ctr/bundle/") in stage
    assert ("ENTRYPOINT", '["/opt/ctr/venv/bin/ctr-worker"]') in stage
