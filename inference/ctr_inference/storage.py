"""Small S3 helpers shared by the worker, the dispatcher and the run status."""

from __future__ import annotations

import json

# Error codes S3 returns for a missing key or bucket (GetObject, HeadObject, ListObjectsV2).
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


def is_not_found(error: Exception) -> bool:
    """Tell whether a botocore ``ClientError`` means that the key or bucket does not exist."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) in NOT_FOUND_CODES


def is_precondition_failed(error: Exception) -> bool:
    """Tell whether a botocore ``ClientError`` reports a failed conditional write (HTTP 412)."""
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code == "PreconditionFailed" or status == 412


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    """Return every key under ``prefix``, sorted."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def get_json(s3, bucket: str, key: str) -> dict | None:
    """Return the decoded JSON object at ``key``, or None when it does not exist.

    Raises:
        ValueError: the object is not valid JSON.
        botocore.exceptions.ClientError: any S3 error other than a missing key.
    """
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    return json.loads(body)


def dump_json(document: dict) -> bytes:
    """Serialize a document the same way every time, so identical content gives identical objects."""
    return (json.dumps(document, sort_keys=True, indent=2, default=str) + "\n").encode()


def put_json(s3, bucket: str, key: str, document: dict, **options) -> None:
    """Write ``document`` as JSON at ``key``; ``options`` go to ``put_object`` (``IfNoneMatch``)."""
    s3.put_object(Bucket=bucket, Key=key, Body=dump_json(document), ContentType="application/json",
                  **options)


def delete_key(s3, bucket: str, key: str) -> None:
    """Delete ``key``; deleting a missing key succeeds, as in S3 itself."""
    s3.delete_object(Bucket=bucket, Key=key)
