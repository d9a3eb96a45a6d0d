"""Promote, list and roll back model images, one git commit each.

A promotion commit changes only the release block of one overlay. Its
message names what it deploys twice: in a sentence for people, and in
trailers that ``history`` and ``rollback`` parse::

    Promote ctr-criteo v4 to staging [skip ci]

    Deploy model ctr-criteo version 4 (MLflow run 5f0c…) to staging as
    111122223333.dkr.ecr.us-east-1.amazonaws.com/ctr-model:ctr-criteo-v4-1a2b3c4@sha256:….

    Deploy-Action: promote
    Deploy-Environment: staging
    Deploy-Image: 111122223333.dkr.ecr.us-east-1.amazonaws.com/ctr-model:ctr-criteo-v4-1a2b3c4@sha256:…
    Model-Name: ctr-criteo
    Model-Version: 4
    MLflow-Run-Id: 5f0c…

``[skip ci]`` keeps the commit from starting another pipeline: CircleCI skips
pushes whose head commit message contains it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from ctr.deploy.errors import (
    ImageNotFoundError,
    ImageReferenceError,
    NotAPromotionError,
    OverlayError,
    PromotionNotFoundError,
    RegistryUnavailableError,
)
from ctr.deploy.gitrepo import Commit, GitRepository
from ctr.deploy.images import ImageReference
from ctr.deploy.overlay import Release, overlay_file, read_release, write_release
from ctr.deploy.registry import RegistryClient

logger = logging.getLogger(__name__)

SKIP_CI = "[skip ci]"
PROMOTE = "promote"
ROLLBACK = "rollback"

# Image labels written by the bake (see model-images/ctr_images/bake.py).
LABEL_MODEL_NAME = "ai.ctr.model.name"
LABEL_MODEL_VERSION = "ai.ctr.model.version"
LABEL_RUN_ID = "ai.ctr.mlflow.run_id"


@dataclass(frozen=True)
class Deployment:
    """One promotion or rollback commit of an environment, as ``history`` lists it."""

    commit: str
    committed_at: str
    action: str
    environment: str
    image: str
    model_name: str
    model_version: str
    run_id: str
    reverts: str
    subject: str

    @classmethod
    def from_commit(cls, commit: Commit) -> Deployment:
        t = commit.trailers
        return cls(commit.sha, commit.committed_at, t.get("Deploy-Action", ""),
                   t.get("Deploy-Environment", ""), t.get("Deploy-Image", ""),
                   t.get("Model-Name", ""), t.get("Model-Version", ""), t.get("MLflow-Run-Id", ""),
                   t.get("Deploy-Reverts", ""), commit.subject)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelFacts:
    """The registered model an image serves and the MLflow run that trained it."""

    name: str
    version: str
    run_id: str


# Promote ------------------------------------------------------------------------


def promote(repo: GitRepository, environment: str, image: ImageReference, facts: ModelFacts,
            registry: RegistryClient | None = None, verify_image: bool = True) -> str | None:
    """Pin ``image`` in the environment's overlay and commit it; return the commit SHA.

    Returns None, and commits nothing, when the environment already runs the image.

    Raises:
        DirtyWorkingTreeError: tracked files have uncommitted changes.
        ImageReferenceError: the image has no tag or no digest.
        ImageNotFoundError: the registry was reached and does not have the image.
        OverlayError: the overlay or its release block is missing.
    """
    repo.require_clean()
    if not image.digest or not image.tag:
        raise ImageReferenceError(f"image {image} needs a tag and a digest to be promoted")
    if verify_image:
        _check_image_exists(registry or RegistryClient(), image, "promote")

    path = overlay_file(repo.root, environment)
    text = path.read_text()
    current = read_release(text, str(path))
    release = Release(image, facts.name, facts.version)
    if current == release:
        logger.info("%s already runs %s; nothing to commit", environment, image)
        return None

    path.write_text(write_release(text, release, str(path)))
    message = promotion_message(environment, image, facts)
    sha = repo.commit_file(path, message)
    logger.info("promoted %s version %s to %s in commit %s", facts.name, facts.version, environment,
                sha[:10])
    return sha


def promotion_message(environment: str, image: ImageReference, facts: ModelFacts) -> str:
    """Return the commit message of a promotion."""
    return (
        f"Promote {facts.name} v{facts.version} to {environment} {SKIP_CI}\n"
        "\n"
        f"Deploy model {facts.name} version {facts.version} (MLflow run {facts.run_id})\n"
        f"to {environment} as {image}.\n"
        "\n"
        f"Deploy-Action: {PROMOTE}\n"
        f"Deploy-Environment: {environment}\n"
        f"Deploy-Image: {image}\n"
        f"Model-Name: {facts.name}\n"
        f"Model-Version: {facts.version}\n"
        f"MLflow-Run-Id: {facts.run_id}\n"
    )


def model_facts(image: ImageReference, name: str = "", version: str = "", run_id: str = "",
                registry: RegistryClient | None = None, tracking_uri: str = "") -> ModelFacts:
    """Work out which model version and MLflow run an image serves.

    Each fact comes from the first source that has it: the arguments, the
    image's labels in the registry, the ``<model>-v<version>-<sha>`` tag, and
    for the run id the MLflow model registry at ``tracking_uri``.

    Raises:
        ImageReferenceError: the model name, version or run id cannot be found.
    """
    labels = {}
    if not (name and version and run_id):
        try:
            labels = (registry or RegistryClient()).labels(image)
        except (RegistryUnavailableError, ImageNotFoundError) as error:
            logger.warning("cannot read the labels of %s: %s", image, error)
    from_tag = image.release() or ("", "")
    name = name or labels.get(LABEL_MODEL_NAME) or from_tag[0]
    version = version or labels.get(LABEL_MODEL_VERSION) or from_tag[1]
    run_id = run_id or labels.get(LABEL_RUN_ID, "")
    if name and version and not run_id and tracking_uri:
        run_id = _run_id_from_mlflow(tracking_uri, name, version)
    missing = [label for label, value in (("--model-name", name), ("--model-version", version),
                                          ("--run-id", run_id)) if not value]
    if missing:
        raise ImageReferenceError(
            f"cannot tell {' and '.join(missing)} of {image} from its labels or tag; pass "
            f"{' '.join(missing)} (or set MLFLOW_TRACKING_URI to look the run up)"
        )
    return ModelFacts(name, str(version), run_id)


def _run_id_from_mlflow(tracking_uri: str, name: str, version: str) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient(tracking_uri=tracking_uri).get_model_version(name, version).run_id
    except MlflowException as error:
        logger.warning("MLflow at %s has no model %s version %s: %s", tracking_uri, name, version,
                       error)
        return ""


def current_release(repo: GitRepository, environment: str, revision: str = "") -> Release:
    """Return the release an environment's overlay pins, in the working tree or at ``revision``.

    Raises:
        OverlayError: the overlay or its release block is missing.
    """
    path = overlay_file(repo.root, environment)
    if not revision:
        return read_release(path.read_text(), str(path))
    text = repo.show_file(revision, path)
    if text is None:
        raise OverlayError(f"{path} does not exist at {revision[:10]}")
    return read_release(text, f"{path} at {revision[:10]}")


def facts_of_release(repo: GitRepository, environment: str, release: Release) -> ModelFacts:
    """Return the model facts recorded by the deploy commit that made ``release`` current.

    The run id is empty when no deploy commit of the environment names this
    image (for example the placeholder an overlay starts with).
    """
    image = str(release.image)
    for entry in history(repo, environment):
        if entry.image == image:
            return ModelFacts(entry.model_name or release.model_name,
                              entry.model_version or release.model_version, entry.run_id)
    return ModelFacts(release.model_name, release.model_version, "")


# History --------------------------------------------------------------------------


def history(repo: GitRepository, environment: str) -> list[Deployment]:
    """Return the promotions and rollbacks of an environment, newest first."""
    path = overlay_file(repo.root, environment)
    entries = []
    for commit in repo.log(path):
        entry = Deployment.from_commit(commit)
        if entry.environment == environment and entry.action in (PROMOTE, ROLLBACK):
            entries.append(entry)
    return entries


# Rollback -------------------------------------------------------------------------


def rollback(repo: GitRepository, environment: str, commit: str = "",
             registry: RegistryClient | None = None, verify_image: bool = True) -> tuple[str, Release]:
    """Revert a promotion of ``environment``; return the new commit's SHA and the restored release.

    Without ``commit``, the latest promotion that no rollback has reverted yet
    is reverted. Before anything changes, the image the environment returns to
    is looked up in its registry. A registry that returns "not found" stops
    the rollback; one that cannot be reached only logs a warning.

    Raises:
        DirtyWorkingTreeError: tracked files have uncommitted changes.
        NotAPromotionError: ``commit`` is not a promotion of the environment.
        PromotionNotFoundError: there is no promotion left to revert, or
            ``commit`` was already reverted.
        ImageNotFoundError: the image to return to no longer exists in its registry.
        GitError: the revert conflicts with later commits.
    """
    repo.require_clean()
    entries = history(repo, environment)
    reverted = {entry.reverts for entry in entries if entry.action == ROLLBACK}

    if commit:
        target = _named_promotion(repo, environment, commit)
        if target.commit in reverted:
            raise PromotionNotFoundError(f"promotion {target.commit[:10]} of {environment} was "
                                         "already rolled back")
    else:
        candidates = [e for e in entries if e.action == PROMOTE and e.commit not in reverted]
        if not candidates:
            raise PromotionNotFoundError(f"{environment} has no promotion left to roll back")
        target = candidates[0]

    restored = current_release(repo, environment, f"{target.commit}^")
    if verify_image:
        _check_image_exists(registry or RegistryClient(), restored.image, "roll back to")

    facts = facts_of_release(repo, environment, restored)
    message = rollback_message(environment, target, restored, facts)
    sha = repo.revert(target.commit, message)
    logger.info("rolled %s back to %s in commit %s (reverts %s)", environment, restored.image,
                sha[:10], target.commit[:10])
    return sha, restored


def _named_promotion(repo: GitRepository, environment: str, commit: str) -> Deployment:
    sha = repo.resolve(commit)
    found = repo.log(revision=sha, max_count=1)
    entry = Deployment.from_commit(found[0])
    if entry.action != PROMOTE or entry.environment != environment:
        kind = f"a {entry.action} of {entry.environment}" if entry.action else "not a deploy commit"
        raise NotAPromotionError(f"commit {sha[:10]} ({entry.subject!r}) is {kind}, not a "
                                 f"promotion of {environment}; `ctr deploy history {environment}` "
                                 "lists the promotions")
    return entry


def rollback_message(environment: str, target: Deployment, restored: Release,
                     facts: ModelFacts) -> str:
    """Return the commit message of a rollback."""
    run = f" (MLflow run {facts.run_id})" if facts.run_id else ""
    # The run id is unknown when the restored image was never promoted by a
    # commit (an overlay's first pin); the trailer is left out then.
    run_trailer = f"MLflow-Run-Id: {facts.run_id}\n" if facts.run_id else ""
    return (
        f"Roll back {environment} to {facts.name} v{facts.version} {SKIP_CI}\n"
        "\n"
        f"This reverts commit {target.commit}\n"
        f"(\"{target.subject}\").\n"
        f"{environment} runs model {facts.name} version {facts.version}{run} again,\n"
        f"as {restored.image}.\n"
        "\n"
        f"Deploy-Action: {ROLLBACK}\n"
        f"Deploy-Environment: {environment}\n"
        f"Deploy-Image: {restored.image}\n"
        f"Deploy-Reverts: {target.commit}\n"
        f"Model-Name: {facts.name}\n"
        f"Model-Version: {facts.version}\n"
        f"{run_trailer}"
    )


def _check_image_exists(registry: RegistryClient, image: ImageReference, action: str) -> None:
    try:
        exists = registry.image_exists(image)
    except RegistryUnavailableError as error:
        logger.warning("cannot check that %s exists before it is deployed (%s); going on", image, error)
        return
    if not exists:
        raise ImageNotFoundError(f"cannot {action} {image}: the registry {image.registry} does not "
                                 "have it (expired or deleted?); promote an image that exists")
