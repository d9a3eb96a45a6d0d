"""The daemonless OCI image layout: reproducible bundle layers and verified extraction."""

from __future__ import annotations

import json

import pytest

from ctr_images.oci_layout import write_model_image
from ctr_inference.bundle import load_bundle
from ctr_inference.errors import BundleChecksumError, BundleNotFoundError
from ctr_inference.oci import extract_bundle
from tests.helpers import write_tiny_bundle


def test_rebake_gives_identical_layer(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    first = write_model_image(tmp_path / "one", "m-v1-abc", bundle, {"k": "v"})
    second = write_model_image(tmp_path / "two", "m-v1-abc", bundle, {"k": "v"})
    assert first.layer_digest == second.layer_digest
    assert first.digest == second.digest


def test_extracted_bundle_verifies(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    image = write_model_image(tmp_path / "layout", "m-v1-abc", bundle, {"ai.ctr.model.version": "1"})
    extracted = extract_bundle(f"{image.layout}:{image.tag}", tmp_path / "out")
    assert load_bundle(extracted).digest == load_bundle(bundle).digest


def test_labels_and_bundle_env_in_config(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    image = write_model_image(tmp_path / "layout", "m-v1-abc", bundle, {"ai.ctr.model.version": "1"})
    index = json.loads((image.layout / "index.json").read_text())
    manifest = json.loads((image.layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((image.layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["config"]["Labels"]["ai.ctr.model.version"] == "1"
    assert "MODEL_SOURCE=baked" in config["config"]["Env"]


def test_tampered_layer_is_rejected(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    image = write_model_image(tmp_path / "layout", "m-v1-abc", bundle, {})
    blob = image.layout / "blobs" / "sha256" / image.layer_digest.split(":")[1]
    blob.write_bytes(blob.read_bytes()[:-10])
    with pytest.raises(BundleChecksumError, match="has digest"):
        extract_bundle(f"{image.layout}:{image.tag}", tmp_path / "out")


def test_unknown_tag_lists_known_tags(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    image = write_model_image(tmp_path / "layout", "m-v1-abc", bundle, {})
    with pytest.raises(BundleNotFoundError, match="m-v1-abc"):
        extract_bundle(f"{image.layout}:nope", tmp_path / "out")
