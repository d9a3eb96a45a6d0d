"""`ctr deploy status` against a Kubernetes API stand-in on 127.0.0.1.

The stand-in serves the Argo CD Application and the worker Deployment in the
real API's JSON shape. The kubernetes client reads them through a kubeconfig,
as it would from a cluster.
"""

from __future__ import annotations

import pytest
from deploy_support import git

from ctr.commands.deploy import main
from ctr.testing.k8s_api import GitOpsSync, KubernetesApiStub, argo_application, deployment
from ctr.testing.registry import free_port, push_image

IMAGE = "127.0.0.1:5000/ctr-model:ctr-criteo-v4-0000004@sha256:" + "4" * 64
OLD_IMAGE = "127.0.0.1:5000/ctr-model:ctr-criteo-v3-0000003@sha256:" + "3" * 64


def status(cluster, *extra: str) -> int:
    return main(["deploy", "status", "staging", "--kubeconfig", str(cluster.kubeconfig),
                 "--image", IMAGE, *extra])


def test_synced_and_healthy(cluster, capsys):
    cluster.put(argo_application("ctr-staging", revision="abc123"))
    cluster.put(deployment("ctr-worker", "ctr", IMAGE, replicas=3))

    code = status(cluster)
    output = capsys.readouterr().out

    assert code == 0
    assert "synced and healthy at revision abc123" in output
    assert "3/3 replicas ready" in output


def test_scaled_to_zero_is_healthy(cluster, capsys):
    cluster.put(argo_application("ctr-staging", revision="abc123"))
    cluster.put(deployment("ctr-worker", "ctr", IMAGE, replicas=0))

    assert status(cluster) == 0
    assert "scaled to zero" in capsys.readouterr().out
    assert status(cluster, "--min-ready", "1") == 4


@pytest.mark.parametrize(("application", "workload", "reason"), [
    (argo_application("ctr-staging", sync="OutOfSync", health="Healthy", phase="Running"),
     deployment("ctr-worker", "ctr", OLD_IMAGE, replicas=2), "OutOfSync"),
    (argo_application("ctr-staging", health="Progressing"),
     deployment("ctr-worker", "ctr", IMAGE, replicas=2, ready=1, old_replicas=1), "health is Progressing"),
    (argo_application("ctr-staging"),
     deployment("ctr-worker", "ctr", OLD_IMAGE, replicas=2), "waiting for " + IMAGE),
    (argo_application("ctr-staging"),
     deployment("ctr-worker", "ctr", IMAGE, replicas=2, updated=1, ready=1, old_replicas=1),
     "1 of 2 replicas updated"),
    (argo_application("ctr-staging"),
     deployment("ctr-worker", "ctr", IMAGE, replicas=2, generation=3, observed_generation=2),
     "has not observed"),
])
def test_progressing(cluster, capsys, application, workload, reason):
    cluster.put(application)
    cluster.put(workload)

    code = status(cluster)
    error = capsys.readouterr().err

    assert code == 4
    assert "still progressing" in error
    assert reason in error


@pytest.mark.parametrize(("application", "workload", "reason"), [
    (argo_application("ctr-staging", health="Degraded", health_message="back-off pulling image"),
     deployment("ctr-worker", "ctr", IMAGE, replicas=1, ready=0), "back-off pulling image"),
    (argo_application("ctr-staging", sync="OutOfSync", phase="Failed",
                      message="one or more objects failed to apply"),
     deployment("ctr-worker", "ctr", OLD_IMAGE, replicas=1), "failed to apply"),
    (argo_application("ctr-staging"),
     deployment("ctr-worker", "ctr", IMAGE, replicas=1, ready=0, conditions=[
         {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
          "message": 'ReplicaSet "ctr-worker-7d9" has timed out progressing.'}]),
     "exceeded its progress deadline"),
])
def test_degraded(cluster, capsys, application, workload, reason):
    cluster.put(application)
    cluster.put(workload)

    code = status(cluster, "--timeout", "30", "--interval", "0.1")
    error = capsys.readouterr().err

    assert code == 3
    assert "degraded" in error
    assert reason in error


def test_unreachable_api(tmp_path, capsys):
    with KubernetesApiStub(port=free_port()) as stub:
        kubeconfig = stub.write_kubeconfig(tmp_path / "kubeconfig")
    # The server is stopped now, so its port refuses connections.

    code = main(["deploy", "status", "staging", "--kubeconfig", str(kubeconfig), "--image", IMAGE])
    error = capsys.readouterr().err

    assert code == 1
    assert "cannot reach the Kubernetes API at http://127.0.0.1:" in error


def test_missing_application(cluster, capsys):
    assert status(cluster) == 1
    assert "Application argocd/ctr-staging does not exist" in capsys.readouterr().err


def test_missing_kubeconfig(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    code = main(["deploy", "status", "staging", "--kubeconfig", str(tmp_path / "none"), "--image", IMAGE])

    assert code == 1
    assert "no kubeconfig found" in capsys.readouterr().err


def test_waits_until_healthy(cluster, capsys):
    cluster.put(argo_application("ctr-staging", sync="OutOfSync", phase="Running"))
    cluster.put(deployment("ctr-worker", "ctr", OLD_IMAGE, replicas=2))
    reads = []

    def roll_out(stub, application):
        reads.append(application)
        if len(reads) == 3:
            stub.put(argo_application("ctr-staging", revision="def456"))
            stub.put(deployment("ctr-worker", "ctr", IMAGE, replicas=2))

    cluster.set_reactor("argoproj.io/v1alpha1", "Application", "ctr-staging", "argocd", roll_out)

    code = status(cluster, "--timeout", "30", "--interval", "0.1")

    assert code == 0
    assert len(reads) >= 3
    assert "def456" in capsys.readouterr().out


def test_times_out_while_progressing(cluster, capsys):
    cluster.put(argo_application("ctr-staging", health="Progressing"))
    cluster.put(deployment("ctr-worker", "ctr", IMAGE, replicas=1, ready=0))

    code = status(cluster, "--timeout", "0.5", "--interval", "0.1")

    assert code == 4
    assert "still progressing after 0 s" in capsys.readouterr().err


def test_expected_image_comes_from_overlay(cluster, gitops_repo, capsys):
    overlay_image = ("111122223333.dkr.ecr.us-east-1.amazonaws.com/ctr-model:ctr-criteo-v0-0000000@sha256:"
                     + "0" * 64)
    cluster.put(argo_application("ctr-staging", revision="abc"))
    cluster.put(deployment("ctr-worker", "ctr", IMAGE, replicas=1))
    args = ["deploy", "status", "staging", "--kubeconfig", str(cluster.kubeconfig), "--repo", str(gitops_repo)]

    assert main(args) == 4
    assert overlay_image in capsys.readouterr().err
    cluster.put(deployment("ctr-worker", "ctr", overlay_image, replicas=1))
    assert main(args) == 0


def test_promote_push_wait_against_synced_cluster(tmp_path, gitops_repo, registry, cluster, capsys):
    """The promote job's flow: commit, push, and wait until the pushed overlay runs."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(gitops_repo), str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    GitOpsSync(str(origin), tmp_path / "argocd-checkout", "staging").install(cluster)
    digest = push_image(registry.host, "ctr-model", "ctr-criteo-v8-0000008", {"ai.ctr.mlflow.run_id": "r8"})
    image = f"{registry.host}/ctr-model:ctr-criteo-v8-0000008@{digest}"

    code = main(["deploy", "promote", "staging", image, "--push", "--wait", "--timeout", "60",
                 "--interval", "0.2", "--kubeconfig", str(cluster.kubeconfig), "--repo", str(work)])
    output = capsys.readouterr().out

    assert code == 0
    assert f"1/1 replicas ready on {image}" in output
    assert git(origin, "rev-parse", "main") == git(work, "rev-parse", "HEAD")
