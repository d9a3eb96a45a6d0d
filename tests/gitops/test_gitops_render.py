"""Every kustomization renders, and what it renders is valid Kubernetes.

Core kinds are checked with kubernetes-validate in strict mode, where unknown
fields are errors. Custom resources are checked with check-jsonschema against
the CRD schemas kept in the shared data folder beside the checkout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gitops_support import KUBERNETES_VERSION, SCHEMAS, TARGETS, documents

BIN = Path(sys.executable).parent
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/triggerauthentication_v1alpha1.json",
    ("argoproj.io/v1alpha1", "Application"): "argoproj.io/application_v1alpha1.json",
    ("argoproj.io/v1alpha1", "AppProject"): "argoproj.io/appproject_v1alpha1.json",
    ("karpenter.sh/v1", "NodePool"): "karpenter.sh/nodepool_v1.json",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): "karpenter.k8s.aws/ec2nodeclass_v1.json",
}


def kubernetes_validate(docs: list[dict], folder: Path) -> subprocess.CompletedProcess:
    paths = []
    for index, doc in enumerate(docs):
        path = folder / f"{index:03d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    return subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet",
                           "--kubernetes-version", KUBERNETES_VERSION, *paths],
                          capture_output=True, text=True, check=False, timeout=300)


def check_jsonschema(schema: Path, docs: list[dict], folder: Path) -> subprocess.CompletedProcess:
    paths = []
    for index, doc in enumerate(docs):
        path = folder / f"{index:03d}-{doc['kind']}-{doc['metadata']['name']}.json"
        path.write_text(json.dumps(doc))
        paths.append(str(path))
    return subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(schema), *paths],
                          capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_kustomization_renders(rendered, target):
    docs = documents(rendered, target)

    assert docs, f"{TARGETS[target]} rendered no documents"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_core_kinds_validate(rendered, target, tmp_path):
    core = [d for d in documents(rendered, target)
            if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS]
    if not core:
        pytest.skip(f"{target} renders custom resources only")

    result = kubernetes_validate(core, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_custom_resources_validate(rendered, target, tmp_path):
    docs = documents(rendered, target)
    # Kinds of API groups with a dot (argoproj.io, keda.sh, karpenter.sh) are
    # custom resources, which kubernetes-validate cannot check.
    custom = {(d["apiVersion"], d["kind"]) for d in docs if "." in d["apiVersion"].split("/")[0]}
    assert custom <= set(CRD_SCHEMAS), f"custom resources without a schema: {custom - set(CRD_SCHEMAS)}"
    by_kind = {}
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            by_kind.setdefault(key, []).append(doc)
    if not by_kind:
        pytest.skip(f"{target} renders core kinds only")

    for key, group in sorted(by_kind.items()):
        folder = tmp_path / key[1]
        folder.mkdir()
        result = check_jsonschema(SCHEMAS / CRD_SCHEMAS[key], group, folder)
        assert result.returncode == 0, f"{key[1]}: {result.stdout}{result.stderr}"


def test_schemas_are_present():
    missing = [name for name in CRD_SCHEMAS.values() if not (SCHEMAS / name).is_file()]

    assert not missing, f"CRD schemas missing under {SCHEMAS}: {missing}"


def test_validators_reject_invalid_manifests(rendered, tmp_path):
    """The two validators are wired so that they fail on invalid input, not only pass."""
    deployment = next(d for d in documents(rendered, "prod") if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "seventy"
    scaled = next(d for d in documents(rendered, "prod") if d["kind"] == "ScaledObject")
    misspelt = json.loads(json.dumps(scaled))
    misspelt["spec"]["maxReplicaCounts"] = 8
    (tmp_path / "core").mkdir()
    (tmp_path / "crd").mkdir()

    core = kubernetes_validate([broken], tmp_path / "core")
    crd = check_jsonschema(SCHEMAS / CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")], [misspelt],
                           tmp_path / "crd")

    assert core.returncode != 0
    assert crd.returncode != 0


def test_unreferenced_kustomize_files_are_absent():
    """Every YAML file under gitops/ is reachable from some kustomization (no dead manifests)."""
    gitops = Path(__file__).resolve().parents[2] / "gitops"
    referenced = set()
    for kustomization in gitops.rglob("kustomization.yaml"):
        document = yaml.safe_load(kustomization.read_text())
        for field in ("resources", "components", "transformers", "configurations"):
            for entry in document.get(field) or []:
                referenced.add((kustomization.parent / entry).resolve())
        for patch in document.get("patches") or []:
            if "path" in patch:
                referenced.add((kustomization.parent / patch["path"]).resolve())
    manifests = [p.resolve() for p in gitops.rglob("*.yaml") if p.name != "kustomization.yaml"]

    unreferenced = [str(p.relative_to(gitops)) for p in manifests if p not in referenced]

    assert manifests
    assert not unreferenced, f"YAML files no kustomization uses: {unreferenced}"
