"""Fixtures for the GitOps tests: rendered manifests of every kustomization."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from gitops_support import COMPONENT_KUSTOMIZATIONS, GITOPS, TARGETS, run_kustomize


@pytest.fixture(scope="session")
def render_tree(tmp_path_factory) -> Path:
    """A copy of gitops/ with one kustomization per component (base plus that component)."""
    tree = tmp_path_factory.mktemp("render") / "gitops"
    shutil.copytree(GITOPS, tree)
    for name, kustomization in COMPONENT_KUSTOMIZATIONS.items():
        folder = tree / "_render" / name
        folder.mkdir(parents=True)
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return tree


@pytest.fixture(scope="session")
def rendered(render_tree) -> dict[str, list[dict]]:
    """Rendered documents of every target; a target that fails to render maps to its stderr."""
    results = {}
    for name, relative in TARGETS.items():
        completed = run_kustomize(render_tree / relative)
        if completed.returncode != 0:
            results[name] = completed.stderr
            continue
        results[name] = [d for d in yaml.safe_load_all(completed.stdout) if d]
    return results
