"""Model sources of a worker: baked into the image, from S3, or from an OCI layout.

All three end in the same verified bundle directory, so "baked" and "S3"
differ only in where the bytes come from. The model store on S3 keeps one
bundle per model version under ``<store>/<name>/<version>/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ctr_inference.bundle import Bundle, load_bundle
from ctr_inference.errors import BundleNotFoundError, CtrError
from ctr_inference.messages import split_s3_uri

logger = logging.getLogger(__name__)

BAKED = "baked"
S3 = "s3"
OCI = "oci"
SOURCES = (BAKED, S3, OCI)


def s3_client():
    """Return a boto3 S3 client; ``AWS_ENDPOINT_URL`` points it at a local emulator."""
    import boto3

    return boto3.client("s3")


def bundle_uri(store_uri: str, model_name: str, model_version: str) -> str:
    """Return the S3 URI of one model version's bundle in the model store."""
    return f"{store_uri.rstrip('/')}/{model_name}/{model_version}/"


def download_bundle(uri: str, cache_dir: Path, client=None) -> Path:
    """Download the bundle under ``uri`` into ``cache_dir`` once, and return its directory.

    The download goes to a temporary directory that is renamed into place, so a
    crash never leaves a half-written bundle in the cache. A cached copy is
    verified again by ``load_bundle`` whenever it is used.

    Raises:
        BundleNotFoundError: no object exists under ``uri``.
    """
    client = client or s3_client()
    bucket, prefix = split_s3_uri(uri.rstrip("/") + "/")
    prefix = prefix.rstrip("/") + "/"
    target = Path(cache_dir) / bucket / prefix.strip("/")
    if target.is_dir():
        return target

    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    if not keys:
        raise BundleNotFoundError(f"no model bundle at {uri}")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
    try:
        for key in keys:
            relative = key[len(prefix):]
            if not relative or relative.endswith("/") or ".." in relative.split("/"):
                continue
            local = staging / relative
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(local))
        os.replace(staging, target)
    except FileExistsError:
        # Another process on this node finished the same download first.
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("downloaded bundle %s (%d files) into %s", uri, len(keys), target)
    return target


def upload_bundle(bundle_dir: Path, uri: str, client=None) -> None:
    """Upload a bundle directory to the model store, ``bundle.json`` last.

    Writing the metadata last means a reader that finds ``bundle.json`` finds
    every file it lists.
    """
    client = client or s3_client()
    bucket, prefix = split_s3_uri(uri.rstrip("/") + "/")
    prefix = prefix.rstrip("/") + "/"
    files = sorted(p for p in Path(bundle_dir).rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == "bundle.json")
    for path in files:
        client.upload_file(str(path), bucket, prefix + path.relative_to(bundle_dir).as_posix())


def open_bundle(source: str, location: str, cache_dir: str | os.PathLike | None = None) -> Bundle:
    """Load and verify a bundle from ``source`` (``baked``, ``s3`` or ``oci``).

    ``location`` is a directory for ``baked``, an ``s3://`` prefix for ``s3``
    and ``DIR:TAG`` of an OCI image layout for ``oci``.

    Raises:
        CtrError: an unknown source.
        BundleError: the bundle is missing, damaged or incompatible.
    """
    cache = Path(cache_dir or tempfile.gettempdir()) / "ctr-bundles"
    if source == BAKED:
        return load_bundle(location)
    if source == S3:
        return load_bundle(download_bundle(location, cache))
    if source == OCI:
        from ctr_inference.oci import extract_bundle

        destination = Path(tempfile.mkdtemp(dir=_ensure(cache), prefix="oci-"))
        return load_bundle(extract_bundle(location, destination))
    raise CtrError(f"unknown MODEL_SOURCE {source!r}, expected one of {', '.join(SOURCES)}")


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
