"""The promoted-<tag> tag that keeps an image from expiring, against real registries.

The distribution API path runs against Debian's docker-registry on 127.0.0.1.
The ECR path runs against moto's ECR emulation on 127.0.0.1, which is the
only ECR this machine has.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from deploy_support import git

from ctr.commands.deploy import main
from ctr.deploy import promotions
from ctr.deploy.errors import ImageNotFoundError, ImageReferenceError
from ctr.deploy.gitrepo import GitRepository
from ctr.deploy.images import ImageReference, parse_image_reference
from ctr.deploy.registry import PROMOTED_TAG_PREFIX, RegistryClient, promoted_tag
from ctr.testing.registry import free_port, push_image

REPOSITORY = "ctr-model"
ECR_ACCOUNT = "123456789012"  # moto's account ID
ECR_REGION = "us-east-1"


def push(registry, version: int) -> str:
    """Push a labelled model image for ``version``; return its reference with digest."""
    tag = f"ctr-criteo-v{version}-{version:07x}"
    labels = {"ai.ctr.model.name": "ctr-criteo", "ai.ctr.model.version": str(version),
              "ai.ctr.mlflow.run_id": f"run-{version}"}
    digest = push_image(registry.host, REPOSITORY, tag, labels)
    return f"{registry.host}/{REPOSITORY}:{tag}@{digest}"


def digest_of_promoted(reference: str) -> str:
    image = parse_image_reference(reference)
    promoted = ImageReference(image.registry, image.repository, PROMOTED_TAG_PREFIX + image.tag)
    return RegistryClient().resolve_digest(promoted)


def test_promote_tags_image_before_commit(gitops_repo, registry):
    image = push(registry, 101)

    assert main(["deploy", "promote", "staging", image, "--repo", str(gitops_repo)]) == 0

    assert digest_of_promoted(image) == image.split("@")[1]
    assert "Promote ctr-criteo v101" in git(gitops_repo, "log", "-1", "--format=%s")


def test_promote_again_keeps_tag(gitops_repo, registry):
    image = push(registry, 102)
    main(["deploy", "promote", "staging", image, "--repo", str(gitops_repo)])

    assert main(["deploy", "promote", "prod", "--from", "staging", "--repo", str(gitops_repo)]) == 0
    assert digest_of_promoted(image) == image.split("@")[1]


def test_rollback_tags_restored_image(gitops_repo, registry):
    first = push(registry, 103)
    second = push(registry, 104)
    main(["deploy", "promote", "prod", first, "--skip-image-check", "--repo", str(gitops_repo)])
    main(["deploy", "promote", "prod", second, "--repo", str(gitops_repo)])
    with pytest.raises(ImageNotFoundError):
        digest_of_promoted(first)

    promotions.rollback(GitRepository(gitops_repo), "prod")

    assert digest_of_promoted(first) == first.split("@")[1]


def test_skip_image_check_adds_no_tag(gitops_repo, registry):
    image = push(registry, 105)

    main(["deploy", "promote", "staging", image, "--skip-image-check", "--repo", str(gitops_repo)])

    with pytest.raises(ImageNotFoundError):
        digest_of_promoted(image)


def test_promote_warns_when_tag_cannot_be_added(gitops_repo, caplog):
    closed = f"127.0.0.1:{free_port()}"
    image = f"{closed}/{REPOSITORY}:ctr-criteo-v1-0000001@sha256:{'1' * 64}"

    assert main(["deploy", "promote", "staging", image, "--run-id", "r",
                 "--repo", str(gitops_repo)]) == 0
    assert f"cannot add the tag {PROMOTED_TAG_PREFIX}ctr-criteo-v1-0000001" in caplog.text


def test_add_tag_keeps_manifest_bytes(registry):
    image = parse_image_reference(push(registry, 106))
    client = RegistryClient()

    client.add_tag(image, "copy-106")
    client.add_tag(image, "copy-106")
    body, _ = client._get_manifest(image, "copy-106")

    assert "sha256:" + hashlib.sha256(body).hexdigest() == image.digest
    assert json.loads(body)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


def test_add_tag_rejects_invalid_tag(registry):
    image = parse_image_reference(push(registry, 107))

    with pytest.raises(ImageReferenceError, match="invalid tag"):
        RegistryClient().add_tag(image, "x" * 129)
    with pytest.raises(ImageReferenceError, match="needs a digest"):
        RegistryClient().add_tag(ImageReference(image.registry, image.repository, image.tag), "t")


def test_promoted_tag_needs_image_tag():
    with pytest.raises(ImageReferenceError, match="no tag"):
        promoted_tag(ImageReference("127.0.0.1:5000", REPOSITORY, "", "sha256:" + "0" * 64))


# Amazon ECR, emulated by moto --------------------------------------------------------------


@pytest.fixture
def ecr(tmp_path, monkeypatch):
    """An ECR endpoint (moto server on 127.0.0.1) and a boto3 ECR client for it."""
    import boto3

    from ctr.services import MotoServer, aws_environment

    server = MotoServer(None, tmp_path / "moto-logs").start()
    try:
        for name, value in aws_environment(server.url).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("ecr", region_name=ECR_REGION)
        client.create_repository(repositoryName=REPOSITORY, imageTagMutability="IMMUTABLE")
        yield client
    finally:
        server.stop()


def test_ecr_tag_added_with_put_image(ecr):
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [],
    })
    pushed = ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest,
                           imageManifestMediaType="application/vnd.oci.image.manifest.v1+json",
                           imageTag="ctr-criteo-v1-0000001")
    digest = pushed["image"]["imageId"]["imageDigest"]
    image = ImageReference(f"{ECR_ACCOUNT}.dkr.ecr.{ECR_REGION}.amazonaws.com", REPOSITORY,
                           "ctr-criteo-v1-0000001", digest)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

    RegistryClient().add_tag(image, promoted_tag(image))
    RegistryClient().add_tag(image, promoted_tag(image))
    (details,) = ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]

    assert details["imageDigest"] == digest
    assert sorted(details["imageTags"]) == ["ctr-criteo-v1-0000001",
                                            "promoted-ctr-criteo-v1-0000001"]
