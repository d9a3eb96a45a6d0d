"""Argo CD: projects, Applications, sync waves and pinned add-on charts."""

from __future__ import annotations

import re

import pytest
from gitops_support import ENVIRONMENTS, REPO_ROOT, documents, find, one

SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
CHART_REPOSITORIES = {
    "argo-cd": "https://argoproj.github.io/argo-helm",
    "keda": "https://kedacore.github.io/charts",
    "karpenter": "public.ecr.aws/karpenter",
}


def wave(document: dict) -> int:
    return int(document["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def sync_options(application: dict) -> list[str]:
    return application["spec"].get("syncPolicy", {}).get("syncOptions", [])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_application_syncs_its_overlay(rendered, environment):
    docs = documents(rendered, f"argocd-{environment}")
    application = one(docs, "Application", f"ctr-{environment}")
    automated = application["spec"]["syncPolicy"]["automated"]

    assert application["spec"]["source"]["path"] == f"gitops/overlays/{environment}"
    assert application["spec"]["project"] == "ctr"
    assert automated == {"prune": True, "selfHeal": True}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_application_paths_exist(rendered, environment):
    for application in find(documents(rendered, f"argocd-{environment}"), "Application"):
        path = application["spec"]["source"].get("path")
        if path:
            assert (REPO_ROOT / path / "kustomization.yaml").is_file(), path


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_add_on_charts_are_pinned(rendered, environment):
    charts = {a["spec"]["source"]["chart"]: a
              for a in find(documents(rendered, f"argocd-{environment}"), "Application")
              if "chart" in a["spec"]["source"]}

    assert set(charts) == set(CHART_REPOSITORIES)
    for chart, application in charts.items():
        assert application["spec"]["source"]["repoURL"] == CHART_REPOSITORIES[chart]
        assert SEMVER.match(application["spec"]["source"]["targetRevision"]), chart


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_sync_waves_put_crds_first(rendered, environment):
    docs = documents(rendered, f"argocd-{environment}")
    applications = {a["metadata"]["name"]: a for a in find(docs, "Application")}

    assert wave(applications["argocd"]) < wave(applications["keda"])
    assert wave(applications["keda"]) < wave(applications["karpenter-nodepools"])
    assert wave(applications["karpenter"]) < wave(applications["karpenter-nodepools"])
    assert wave(applications["karpenter-nodepools"]) < wave(applications[f"ctr-{environment}"])
    for project in find(docs, "AppProject"):
        assert wave(project) < min(wave(a) for a in applications.values())


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_large_crds_use_server_side_apply(rendered, environment):
    docs = documents(rendered, f"argocd-{environment}")
    for name in ("argocd", "keda", "karpenter"):
        assert "ServerSideApply=true" in sync_options(one(docs, "Application", name)), name


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_argocd_never_prunes_itself(rendered, environment):
    docs = documents(rendered, f"argocd-{environment}")
    argocd = one(docs, "Application", "argocd")

    assert argocd["spec"]["syncPolicy"]["automated"]["prune"] is False
    for application in find(docs, "Application"):
        if application["metadata"]["name"] != "argocd":
            assert application["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_projects_allow_their_applications(rendered, environment):
    docs = documents(rendered, f"argocd-{environment}")
    projects = {p["metadata"]["name"]: p["spec"] for p in find(docs, "AppProject")}
    for application in find(docs, "Application"):
        project = application["spec"]["project"]
        if project == "default":
            continue
        spec = projects[project]
        destination = application["spec"]["destination"]
        assert application["spec"]["source"]["repoURL"] in spec["sourceRepos"]
        if "namespace" in destination:
            assert {"server": destination["server"], "namespace": destination["namespace"]} in spec["destinations"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_values_are_set(rendered, environment):
    docs = documents(rendered, f"argocd-{environment}")
    karpenter = one(docs, "Application", "karpenter")["spec"]["source"]["helm"]["valuesObject"]
    keda = one(docs, "Application", "keda")["spec"]["source"]["helm"]["valuesObject"]

    assert karpenter["settings"]["clusterName"] == f"ctr-{environment}"
    assert environment in karpenter["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert environment in keda["podIdentity"]["aws"]["irsa"]["roleArn"]
    assert one(docs, "Application", "karpenter-nodepools")["spec"]["source"]["path"] == \
        f"gitops/platform/karpenter/{environment}"
    assert one(docs, "Application", "root")["spec"]["source"]["path"] == f"gitops/argocd/{environment}"
