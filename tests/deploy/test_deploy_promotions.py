"""Promote, history and rollback against a real git repository and a real registry."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from deploy_support import git

from ctr.commands.deploy import main
from ctr.deploy import promotions
from ctr.deploy.errors import (
    DirtyWorkingTreeError,
    GitError,
    ImageNotFoundError,
    ImageReferenceError,
    NotAPromotionError,
    OverlayError,
    PromotionNotFoundError,
)
from ctr.deploy.gitrepo import GitRepository
from ctr.deploy.images import parse_image_reference
from ctr.deploy.overlay import Release, read_release, write_release
from ctr.testing.registry import delete_image, free_port, push_image
from ctr.testing.tools import kubectl

REPOSITORY = "ctr-model"


def push(registry, version: int, run_id: str) -> str:
    """Push a model image for ``version``; return its reference with digest."""
    tag = f"ctr-criteo-v{version}-{version:07x}"
    labels = {"ai.ctr.model.name": "ctr-criteo", "ai.ctr.model.version": str(version),
              "ai.ctr.mlflow.run_id": run_id}
    digest = push_image(registry.host, REPOSITORY, tag, labels)
    return f"{registry.host}/{REPOSITORY}:{tag}@{digest}"


def rendered_image(repo, environment: str) -> str:
    output = subprocess.run([kubectl(), "kustomize", str(repo / "gitops" / "overlays" / environment)],
                            check=True, capture_output=True, text=True).stdout
    deployment = next(d for d in yaml.safe_load_all(output)
                      if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "ctr-worker")
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_promote_twice_roll_back_once(gitops_repo, registry, capsys):
    first = push(registry, 1, "run-one")
    second = push(registry, 2, "run-two")

    assert main(["deploy", "promote", "prod", first, "--repo", str(gitops_repo)]) == 0
    assert main(["deploy", "promote", "prod", second, "--repo", str(gitops_repo)]) == 0
    assert rendered_image(gitops_repo, "prod") == second
    assert main(["deploy", "rollback", "prod", "--repo", str(gitops_repo)]) == 0
    capsys.readouterr()
    assert main(["deploy", "history", "prod", "--json", "--repo", str(gitops_repo)]) == 0
    entries = [yaml.safe_load(line) for line in capsys.readouterr().out.splitlines()]

    assert rendered_image(gitops_repo, "prod") == first
    assert [e["action"] for e in entries] == ["rollback", "promote", "promote"]
    assert [e["model_version"] for e in entries] == ["1", "2", "1"]
    assert [e["run_id"] for e in entries] == ["run-one", "run-two", "run-one"]
    assert entries[0]["reverts"] == entries[1]["commit"]
    assert [e["commit"] for e in entries] == git(gitops_repo, "log", "--format=%H", "-3").splitlines()
    assert all(e["committed_at"] for e in entries)


def test_promotion_commit_names_model_and_skips_ci(gitops_repo, registry):
    image = push(registry, 3, "run-three")

    main(["deploy", "promote", "staging", image, "--repo", str(gitops_repo)])
    message = git(gitops_repo, "log", "-1", "--format=%B")
    changed = git(gitops_repo, "show", "--name-only", "--format=", "HEAD").splitlines()

    assert message.splitlines()[0] == "Promote ctr-criteo v3 to staging [skip ci]"
    assert "Model-Version: 3" in message
    assert "MLflow-Run-Id: run-three" in message
    assert f"Deploy-Image: {image}" in message
    assert changed == ["gitops/overlays/staging/kustomization.yaml"]


def test_promote_resolves_digest_of_tag(gitops_repo, registry):
    image = push(registry, 4, "run-four")
    tag_only = image.split("@")[0]

    assert main(["deploy", "promote", "staging", tag_only, "--repo", str(gitops_repo)]) == 0
    assert rendered_image(gitops_repo, "staging") == image


def test_promote_from_staging_copies_release(gitops_repo, registry):
    image = push(registry, 5, "run-five")
    main(["deploy", "promote", "staging", image, "--repo", str(gitops_repo)])

    assert main(["deploy", "promote", "prod", "--from", "staging", "--repo", str(gitops_repo)]) == 0
    message = git(gitops_repo, "log", "-1", "--format=%B")

    assert rendered_image(gitops_repo, "prod") == image
    assert "MLflow-Run-Id: run-five" in message
    assert message.startswith("Promote ctr-criteo v5 to prod")


def test_promote_same_image_commits_nothing(gitops_repo, registry):
    image = push(registry, 6, "run-six")
    main(["deploy", "promote", "staging", image, "--repo", str(gitops_repo)])
    head = git(gitops_repo, "rev-parse", "HEAD")

    assert main(["deploy", "promote", "staging", image, "--repo", str(gitops_repo)]) == 0
    assert git(gitops_repo, "rev-parse", "HEAD") == head


def test_promote_rejects_missing_image(gitops_repo, registry, capsys):
    missing = f"{registry.host}/{REPOSITORY}:ctr-criteo-v9-0000009@sha256:{'9' * 64}"
    head = git(gitops_repo, "rev-parse", "HEAD")

    assert main(["deploy", "promote", "staging", missing, "--run-id", "r",
                 "--repo", str(gitops_repo)]) == 1
    assert "does not have it" in capsys.readouterr().err
    assert git(gitops_repo, "rev-parse", "HEAD") == head


def test_promote_needs_run_id(gitops_repo, registry, capsys):
    digest = push_image(registry.host, REPOSITORY, "ctr-criteo-v7-0000007", {})
    image = f"{registry.host}/{REPOSITORY}:ctr-criteo-v7-0000007@{digest}"

    assert main(["deploy", "promote", "staging", image, "--repo", str(gitops_repo)]) == 1
    assert "--run-id" in capsys.readouterr().err
    assert main(["deploy", "promote", "staging", image, "--run-id", "given",
                 "--repo", str(gitops_repo)]) == 0
    assert "MLflow-Run-Id: given" in git(gitops_repo, "log", "-1", "--format=%B")


def test_rollback_rejects_dirty_tree(gitops_repo, registry):
    main(["deploy", "promote", "prod", push(registry, 1, "run-one"), "--repo", str(gitops_repo)])
    overlay = gitops_repo / "gitops" / "overlays" / "prod" / "kustomization.yaml"
    overlay.write_text(overlay.read_text() + "\n# local edit\n")

    with pytest.raises(DirtyWorkingTreeError, match="uncommitted changes.*gitops/overlays/prod"):
        promotions.rollback(GitRepository(gitops_repo), "prod")


def test_rollback_rejects_commit_that_is_not_a_promotion(gitops_repo, registry, capsys):
    main(["deploy", "promote", "prod", push(registry, 1, "run-one"), "--repo", str(gitops_repo)])
    (gitops_repo / "notes.txt").write_text("not a deploy\n")
    git(gitops_repo, "add", "notes.txt")
    git(gitops_repo, "commit", "--quiet", "-m", "Add notes")

    assert main(["deploy", "rollback", "prod", "HEAD", "--repo", str(gitops_repo)]) == 1
    assert "not a deploy commit, not a promotion of prod" in capsys.readouterr().err
    with pytest.raises(NotAPromotionError):
        promotions.rollback(GitRepository(gitops_repo), "staging", "HEAD~1")


def test_rollback_named_promotion_twice(gitops_repo, registry):
    main(["deploy", "promote", "prod", push(registry, 1, "run-one"), "--repo", str(gitops_repo)])
    promotion = git(gitops_repo, "rev-parse", "HEAD")
    repo = GitRepository(gitops_repo)

    promotions.rollback(repo, "prod", promotion)

    with pytest.raises(PromotionNotFoundError, match="already rolled back"):
        promotions.rollback(repo, "prod", promotion)
    with pytest.raises(PromotionNotFoundError, match="no promotion left"):
        promotions.rollback(repo, "prod")


def test_rollback_rejects_deleted_image(gitops_repo, registry):
    first = push(registry, 11, "run-eleven")
    main(["deploy", "promote", "prod", first, "--repo", str(gitops_repo)])
    main(["deploy", "promote", "prod", push(registry, 12, "run-twelve"), "--repo", str(gitops_repo)])
    delete_image(registry.host, REPOSITORY, first.split("@")[1])
    head = git(gitops_repo, "rev-parse", "HEAD")

    with pytest.raises(ImageNotFoundError, match="does not have it"):
        promotions.rollback(GitRepository(gitops_repo), "prod")
    assert git(gitops_repo, "rev-parse", "HEAD") == head
    assert git(gitops_repo, "status", "--porcelain") == ""


def test_rollback_goes_on_when_registry_unreachable(gitops_repo, caplog):
    closed = f"127.0.0.1:{free_port()}"
    first = f"{closed}/{REPOSITORY}:ctr-criteo-v1-0000001@sha256:{'1' * 64}"
    second = f"{closed}/{REPOSITORY}:ctr-criteo-v2-0000002@sha256:{'2' * 64}"
    for image in (first, second):
        assert main(["deploy", "promote", "prod", image, "--run-id", "r", "--skip-image-check",
                     "--repo", str(gitops_repo)]) == 0

    sha, restored = promotions.rollback(GitRepository(gitops_repo), "prod")
    message = git(gitops_repo, "log", "-1", "--format=%B")

    assert str(restored.image) == first
    assert rendered_image(gitops_repo, "prod") == first
    assert sha == git(gitops_repo, "rev-parse", "HEAD")
    assert f"Deploy-Image: {first}" in message
    assert "cannot check that" in caplog.text


def test_rollback_of_older_promotion_conflicts_cleanly(gitops_repo, registry):
    first = push(registry, 21, "a")
    main(["deploy", "promote", "prod", first, "--repo", str(gitops_repo)])
    older = git(gitops_repo, "rev-parse", "HEAD")
    main(["deploy", "promote", "prod", push(registry, 22, "b"), "--repo", str(gitops_repo)])
    head = git(gitops_repo, "rev-parse", "HEAD")

    with pytest.raises(GitError, match="roll those back first"):
        promotions.rollback(GitRepository(gitops_repo), "prod", older)
    assert git(gitops_repo, "rev-parse", "HEAD") == head
    assert git(gitops_repo, "status", "--porcelain") == ""


def test_push_rebases_over_concurrent_push(tmp_path, gitops_repo, registry):
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(gitops_repo), str(origin))
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    git(tmp_path, "clone", "--quiet", str(origin), str(mine))
    git(tmp_path, "clone", "--quiet", str(origin), str(theirs))
    (theirs / "other.txt").write_text("pushed first\n")
    git(theirs, "add", "other.txt")
    git(theirs, "commit", "--quiet", "-m", "Push first")
    git(theirs, "push", "--quiet", "origin", "main")

    assert main(["deploy", "promote", "staging", push(registry, 31, "c"), "--push",
                 "--repo", str(mine)]) == 0
    log = git(origin, "log", "--format=%s", "-2", "main").splitlines()

    assert log == ["Promote ctr-criteo v31 to staging [skip ci]", "Push first"]


def test_wait_needs_push(gitops_repo, registry, capsys):
    assert main(["deploy", "promote", "staging", push(registry, 41, "d"), "--wait",
                 "--repo", str(gitops_repo)]) == 1
    assert "--wait requires --push" in capsys.readouterr().err


# The overlay's release block and image references -------------------------------------------


OVERLAY = """# comment kept
images:
  - name: ctr-model
    newName: 127.0.0.1:5000/ctr-model
    newTag: ctr-criteo-v1-aaaaaaa
    digest: sha256:{one}

configMapGenerator:
  - name: ctr-worker
    behavior: merge
    literals:
      - MODEL_NAME=ctr-criteo
      - MODEL_VERSION=1
""".format(one="1" * 64)


def test_write_release_keeps_comments():
    image = parse_image_reference(f"127.0.0.1:5000/ctr-model:ctr-criteo-v2-bbbbbbb@sha256:{'2' * 64}")

    text = write_release(OVERLAY, Release(image, "ctr-criteo", "2"))

    assert text.startswith("# comment kept\n")
    assert read_release(text) == Release(image, "ctr-criteo", "2")
    assert len(text.splitlines()) == len(OVERLAY.splitlines())


def test_write_release_rejects_ambiguous_block():
    image = parse_image_reference(f"r.example/ctr-model:t@sha256:{'2' * 64}")
    doubled = OVERLAY + "\n# another\n#    newTag: x\n    newTag: other\n"

    with pytest.raises(OverlayError, match="exactly one newTag"):
        write_release(doubled, Release(image, "ctr-criteo", "2"))


def test_read_release_requires_digest():
    without_digest = "\n".join(line for line in OVERLAY.splitlines() if "digest:" not in line)

    with pytest.raises(OverlayError, match="without a digest"):
        read_release(without_digest)


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), [
    ("127.0.0.1:5000/ctr-model:v1", "127.0.0.1:5000", "ctr-model", "v1", ""),
    ("localhost/a/b:v1@sha256:" + "a" * 64, "localhost", "a/b", "v1", "sha256:" + "a" * 64),
    ("111122223333.dkr.ecr.us-east-1.amazonaws.com/ctr-model@sha256:" + "b" * 64,
     "111122223333.dkr.ecr.us-east-1.amazonaws.com", "ctr-model", "", "sha256:" + "b" * 64),
    ("library/python:3.11", "", "library/python", "3.11", ""),
])
def test_parse_image_reference(text, registry, repository, tag, digest):
    image = parse_image_reference(text)

    assert (image.registry, image.repository, image.tag, image.digest) == (registry, repository, tag, digest)
    assert str(image) == text


@pytest.mark.parametrize("text", ["ctr-model", "Ctr/Model:v1", "r.example/x:v1@sha256:short",
                                  "r.example/x:bad tag"])
def test_parse_image_reference_rejects(text):
    with pytest.raises(ImageReferenceError):
        parse_image_reference(text)


def test_release_facts_from_tag():
    image = parse_image_reference("r.example/ctr-model:ctr-criteo-v12-1a2b3c4")

    assert image.release() == ("ctr-criteo", "12")
