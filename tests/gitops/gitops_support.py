"""Paths and helpers shared by the GitOps tests: targets to render and document lookups."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ctr.testing.tools import kubectl

REPO_ROOT = Path(__file__).resolve().parents[2]
GITOPS = REPO_ROOT / "gitops"
# The shared data folder sits beside the checkout (a copy of it in CI).
SCHEMAS = REPO_ROOT.parent / "shared" / "schemas" / "crds"
KUBERNETES_VERSION = "1.32.0"
ENVIRONMENTS = ("staging", "prod")

# Every directory that must render, by a short name. Components render on top
# of the base in a generated kustomization (see render_tree).
TARGETS = {
    "base": "base",
    "staging": "overlays/staging",
    "prod": "overlays/prod",
    "component-model-source-s3": "_render/model-source-s3",
    "component-s3-comparison": "_render/s3-comparison",
    "karpenter-staging": "platform/karpenter/staging",
    "karpenter-prod": "platform/karpenter/prod",
    "argocd-staging": "argocd/staging",
    "argocd-prod": "argocd/prod",
}

COMPONENT_KUSTOMIZATIONS = {
    "model-source-s3": {
        "resources": ["../../base"],
        "components": ["../../components/model-source-s3"],
    },
    "s3-comparison": {
        "resources": ["../../base"],
        "components": ["../../components/s3-comparison"],
        "transformers": ["../../wiring/s3-comparison"],
    },
}


def run_kustomize(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                          check=False, timeout=120)


def documents(rendered: dict, target: str) -> list[dict]:
    """Return a target's documents, failing the test with kustomize's error if it did not render."""
    docs = rendered[target]
    if isinstance(docs, str):
        pytest.fail(f"kubectl kustomize {TARGETS[target]} failed: {docs}")
    return docs


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]
