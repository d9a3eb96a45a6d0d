"""Fixtures for image tests: a real registry on loopback, a registered tiny model, a small base image.

The registry is Debian's ``docker-registry`` started by
``ctr.testing.registry.LocalRegistry``, which writes its configuration file
(filesystem storage in a temporary folder, a free port on 127.0.0.1). The
model is trained by the platform's own training code on a tiny feature
table and registered in the session's MLflow server.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr.testing.registry import LocalRegistry
from tests.helpers import feature_table

MODEL_NAME = "ctr-images-test"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class RegistryReader:
    """Client for reads from the distribution API of a registry on loopback."""

    def __init__(self, host: str):
        self.host = host

    def _get(self, path: str, accept: str = "") -> tuple[bytes, dict]:
        request = urllib.request.Request(f"http://{self.host}/v2/{path}",
                                         headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read(), dict(response.headers)

    def repositories(self) -> list[str]:
        return json.loads(self._get("_catalog")[0]).get("repositories") or []

    def tags(self, repository: str) -> list[str]:
        try:
            return json.loads(self._get(f"{repository}/tags/list")[0]).get("tags") or []
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise

    def manifest(self, repository: str, reference: str) -> tuple[dict, str]:
        """Return a manifest and its digest; the body is checked against the digest when pulled by digest."""
        body, _ = self._get(f"{repository}/manifests/{reference}", OCI_MANIFEST)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:"):
            assert digest == reference, f"manifest pulled by {reference} has digest {digest}"
        return json.loads(body), digest

    def blob(self, repository: str, digest: str) -> bytes:
        """Return a blob, checked against its digest."""
        body, _ = self._get(f"{repository}/blobs/{digest}")
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest, f"blob {digest} does not match its digest"
        return body


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on a free loopback port with a configuration of its own, for one test module."""
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as running:
        yield RegistryReader(running.host)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str


@pytest.fixture(scope="session")
def registered_model(mlflow_uri, tmp_path_factory) -> RegisteredModel:
    """A tiny LightGBM model trained and registered by the platform's training code."""
    from ctr_training.train import train_and_register

    folder = tmp_path_factory.mktemp("tiny-features")
    features = folder / "features"
    features.mkdir()
    pq.write_table(feature_table(3000, seed=3), features / "part-00000.parquet")
    encoding = folder / "encoding.parquet"
    pq.write_table(pa.table({"feature": ["f_cat"] * 4, "value": ["0", "5", "50", "500"],
                             "count": pa.array([10, 20, 30, 40], pa.int64())}), encoding)
    result = train_and_register(features, encoding, model_name=MODEL_NAME, experiment="images-tests",
                                categorical=["f_cat"], num_boost_round=8,
                                lgb_params={"num_leaves": 7, "min_data_in_leaf": 20, "num_threads": 1})
    return RegisteredModel(result.model_name, result.model_version, result.run_id)


@pytest.fixture(scope="session")
def stub_base(tmp_path_factory):
    """A one-layer base image (a single file, no runtime) in an OCI layout, built by buildah."""
    from ctr_images.buildah import temporary_buildah
    from ctr_images.oci_layout import read_manifest

    folder = tmp_path_factory.mktemp("stub-base")
    context = folder / "context"
    context.mkdir()
    (context / "stub-release").write_text("stub base image for tests\n")
    (context / "Containerfile").write_text('FROM scratch\nCOPY stub-release /etc/stub-release\nCMD ["/bin/true"]\n')
    layout = folder / "layout"
    with temporary_buildah() as buildah:
        buildah.build(context / "Containerfile", context, "localhost/stub-base:1", timestamp=0)
        buildah.push("localhost/stub-base:1", f"oci:{layout}:stub-1")
    _, digest = read_manifest(layout, "stub-1")
    return layout, "stub-1", digest
