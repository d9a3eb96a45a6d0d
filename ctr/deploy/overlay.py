"""The release block of an overlay: which image and model version an environment runs.

Each overlay's ``kustomization.yaml`` pins the worker image in ``images:``
(``newName``, ``newTag`` and ``digest`` of the entry named ``ctr-model``) and
names the model in a ``configMapGenerator`` that merges ``MODEL_NAME`` and
``MODEL_VERSION`` into the ``ctr-worker`` ConfigMap, where the daily
dispatcher reads them. A promotion rewrites exactly these five values, so its
commit is a five-line diff that ``git revert`` undoes cleanly.

The rewrite edits lines in place, which keeps the file's comments, and then
parses the result to check that it contains the requested values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ctr.deploy.errors import ImageReferenceError, OverlayError
from ctr.deploy.images import ImageReference, parse_image_reference

IMAGE_NAME = "ctr-model"
CONFIGMAP_NAME = "ctr-worker"
OVERLAYS_DIR = Path("gitops/overlays")

_FIELDS = {
    "newName": re.compile(r"^(?P<indent>\s+)newName:\s*\S.*$", re.MULTILINE),
    "newTag": re.compile(r"^(?P<indent>\s+)newTag:\s*\S.*$", re.MULTILINE),
    "digest": re.compile(r"^(?P<indent>\s+)digest:\s*\S.*$", re.MULTILINE),
    "MODEL_NAME": re.compile(r"^(?P<indent>\s+)- MODEL_NAME=.*$", re.MULTILINE),
    "MODEL_VERSION": re.compile(r"^(?P<indent>\s+)- MODEL_VERSION=.*$", re.MULTILINE),
}


@dataclass(frozen=True)
class Release:
    """The pinned image one environment runs and the model baked into it."""

    image: ImageReference
    model_name: str
    model_version: str


def overlay_file(repo_root: Path, environment: str) -> Path:
    """Return the path of an environment's overlay kustomization.

    Raises:
        OverlayError: the environment has no overlay.
    """
    path = Path(repo_root) / OVERLAYS_DIR / environment / "kustomization.yaml"
    if not path.is_file():
        known = sorted(p.name for p in (Path(repo_root) / OVERLAYS_DIR).glob("*") if p.is_dir())
        raise OverlayError(f"environment {environment!r} has no overlay at {path} "
                           f"(environments: {', '.join(known) or 'none'})")
    return path


def read_release(text: str, source: str = "overlay") -> Release:
    """Parse the release block out of an overlay's kustomization text.

    Raises:
        OverlayError: the image entry or the model literals are missing, or the image has no digest.
    """
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise OverlayError(f"{source} is not valid YAML: {error}") from error

    entries = [e for e in document.get("images") or [] if e.get("name") == IMAGE_NAME]
    if len(entries) != 1:
        raise OverlayError(f"{source} must have exactly one images: entry named {IMAGE_NAME}, "
                           f"found {len(entries)}")
    entry = entries[0]
    reference = f"{entry.get('newName', IMAGE_NAME)}:{entry.get('newTag', '')}"
    if entry.get("digest"):
        reference += f"@{entry['digest']}"
    try:
        image = parse_image_reference(reference)
    except ImageReferenceError as error:
        raise OverlayError(f"{source} pins an invalid image: {error}") from error
    if not image.digest:
        raise OverlayError(f"{source} pins {image} without a digest")

    generators = [g for g in document.get("configMapGenerator") or []
                  if g.get("name") == CONFIGMAP_NAME]
    if len(generators) != 1:
        raise OverlayError(f"{source} must have exactly one configMapGenerator for "
                           f"{CONFIGMAP_NAME}, found {len(generators)}")
    literals = dict(item.split("=", 1) for item in generators[0].get("literals") or [] if "=" in item)
    missing = [key for key in ("MODEL_NAME", "MODEL_VERSION") if not literals.get(key)]
    if missing:
        raise OverlayError(f"{source} has no {' or '.join(missing)} literal for {CONFIGMAP_NAME}")
    return Release(image, literals["MODEL_NAME"], literals["MODEL_VERSION"])


def write_release(text: str, release: Release, source: str = "overlay") -> str:
    """Return the overlay text with its release block set to ``release``.

    Raises:
        OverlayError: a release line is missing or appears more than once.
        ImageReferenceError: the release image has no digest.
    """
    if not release.image.digest or not release.image.tag:
        raise ImageReferenceError(f"image {release.image} needs both a tag and a digest: "
                                  "environments pin the digest and show the tag")
    values = {
        "newName": f"newName: {release.image.name}",
        "newTag": f"newTag: {release.image.tag}",
        "digest": f"digest: {release.image.digest}",
        "MODEL_NAME": f"- MODEL_NAME={release.model_name}",
        "MODEL_VERSION": f"- MODEL_VERSION={release.model_version}",
    }
    for field, pattern in _FIELDS.items():
        matches = pattern.findall(text)
        if len(matches) != 1:
            raise OverlayError(f"{source} must contain exactly one {field} line in its release "
                               f"block, found {len(matches)}")
        text = pattern.sub(lambda m, line=values[field]: m.group("indent") + line, text)

    written = read_release(text, source)
    if written != release:
        raise OverlayError(f"rewriting {source} gave {written}, expected {release}")
    return text
