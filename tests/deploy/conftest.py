"""Fixtures for the deploy tests: a git repository with the GitOps tree, a local
registry and a Kubernetes API stand-in, all on this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deploy_support import REPO_ROOT, git

from ctr.services import free_port
from ctr.testing.k8s_api import KubernetesApiStub
from ctr.testing.registry import LocalRegistry

IDENTITY = {
    "GIT_AUTHOR_NAME": "deploy-test", "GIT_AUTHOR_EMAIL": "deploy-test@localhost",
    "GIT_COMMITTER_NAME": "deploy-test", "GIT_COMMITTER_EMAIL": "deploy-test@localhost",
}


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    """Commit as a test identity, never as the developer's, and ignore their git config."""
    for name, value in IDENTITY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture(autouse=True)
def no_aws(monkeypatch):
    """Point AWS calls at a closed port on 127.0.0.1, so ECR lookups fail the same way in every order.

    Other test folders leave the session's moto server in the environment,
    and a developer's machine may hold real credentials; neither may respond
    to these tests. Tests that need ECR start their own moto server and override this.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def gitops_repo(tmp_path) -> Path:
    """A new git repository whose first commit contains a copy of gitops/."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    shutil.copytree(REPO_ROOT / "gitops", repo / "gitops")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message=Add the GitOps tree")
    return repo


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """Debian's docker-registry on 127.0.0.1, for the whole session."""
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def cluster(tmp_path):
    """A Kubernetes API stand-in and a kubeconfig that points at it."""
    with KubernetesApiStub() as stub:
        stub.kubeconfig = stub.write_kubeconfig(tmp_path / "kubeconfig")
        yield stub
