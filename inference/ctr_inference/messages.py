"""Score requests on the queue, and the S3 key layout they point into.

A score request is a small versioned JSON document, one per feature partition::

    {"type": "ctr.score-request", "version": 1,
     "run_id": "2026-12-03.v4", "dt": "2026-12-03", "partition": "part-00007",
     "input": "s3://features/dt=2026-12-03/part-00007.parquet",
     "output": "s3://predictions/dt=2026-12-03/run=2026-12-03.v4/part-00007.parquet",
     "model": {"name": "ctr-criteo", "version": "4"}}

The output key depends only on the run and the partition, so a redelivered
request overwrites the same object with the same content. S3 event
notifications for ``incoming/`` objects are turned into the same document.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass

from ctr_inference.errors import MessageError

MESSAGE_TYPE = "ctr.score-request"
MESSAGE_VERSION = 1

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DT_IN_KEY = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})/")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key.

    Raises:
        MessageError: the URI is not an ``s3://`` URI with a bucket and a key.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.lstrip("/"):
        raise MessageError(f"invalid S3 URI {uri!r}, expected s3://bucket/key")
    return parsed.netloc, parsed.path.lstrip("/")


def run_id_for(dt: str, model_version: str) -> str:
    """Return the run id of scoring date ``dt`` with one model version."""
    return f"{dt}.v{model_version}"


def partition_name(key: str) -> str:
    """Return a partition's name from its key: the file name without ``.parquet``."""
    name = key.rsplit("/", 1)[-1]
    return name[: -len(".parquet")] if name.endswith(".parquet") else name


DEFAULT_PREDICTIONS_PREFIX = "predictions/"


def run_prefix(predictions_bucket: str, dt: str, run_id: str,
               predictions_prefix: str = DEFAULT_PREDICTIONS_PREFIX) -> str:
    """Return the ``s3://`` prefix that contains one run's outputs, manifest and markers.

    ``predictions_prefix`` is the key prefix of one scoring stack (PREDICTIONS_PREFIX
    of its ConfigMap); the IAM roles of the stack may write below it only.

    Raises:
        MessageError: the prefix does not end with "/" or starts with "/".
    """
    if not predictions_prefix.endswith("/") or predictions_prefix.startswith("/"):
        raise MessageError(f"invalid predictions prefix {predictions_prefix!r}: expected "
                           "key segments that end with '/', such as predictions/")
    return f"s3://{predictions_bucket}/{predictions_prefix}dt={dt}/run={run_id}/"


@dataclass(frozen=True)
class ScoreRequest:
    """One partition to score, as carried by a queue message."""

    run_id: str
    dt: str
    partition: str
    input_uri: str
    output_uri: str
    model_name: str
    model_version: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "type": MESSAGE_TYPE,
                "version": MESSAGE_VERSION,
                "run_id": self.run_id,
                "dt": self.dt,
                "partition": self.partition,
                "input": self.input_uri,
                "output": self.output_uri,
                "model": {"name": self.model_name, "version": self.model_version},
            },
            sort_keys=True,
        )

    @property
    def output_prefix(self) -> str:
        return self.output_uri.rsplit("/", 1)[0] + "/"


def make_request(
    input_uri: str, dt: str, model_name: str, model_version: str, predictions_bucket: str,
    predictions_prefix: str = DEFAULT_PREDICTIONS_PREFIX,
) -> ScoreRequest:
    """Build the request that scores ``input_uri`` in the run of ``dt`` and ``model_version``."""
    _, key = split_s3_uri(input_uri)
    partition = partition_name(key)
    run_id = run_id_for(dt, model_version)
    output = run_prefix(predictions_bucket, dt, run_id, predictions_prefix) + f"{partition}.parquet"
    return ScoreRequest(run_id, dt, partition, input_uri, output, model_name, str(model_version))


def parse_request(body: str) -> ScoreRequest:
    """Parse a score request.

    Raises:
        MessageError: not JSON, another message type or version, or a field is missing.
    """
    try:
        document = json.loads(body)
    except json.JSONDecodeError as error:
        raise MessageError(f"message body is not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("type") != MESSAGE_TYPE:
        raise MessageError(f"message is not a {MESSAGE_TYPE}")
    if document.get("version") != MESSAGE_VERSION:
        raise MessageError(
            f"unsupported {MESSAGE_TYPE} version {document.get('version')!r}, "
            f"this worker reads version {MESSAGE_VERSION}"
        )
    try:
        model = document["model"]
        request = ScoreRequest(
            run_id=str(document["run_id"]),
            dt=str(document["dt"]),
            partition=str(document["partition"]),
            input_uri=str(document["input"]),
            output_uri=str(document["output"]),
            model_name=str(model["name"]),
            model_version=str(model["version"]),
        )
    except (KeyError, TypeError) as error:
        raise MessageError(f"score request is missing field {error}") from error
    split_s3_uri(request.input_uri)
    split_s3_uri(request.output_uri)
    if not _DATE.match(request.dt):
        raise MessageError(f"invalid dt {request.dt!r}, expected YYYY-MM-DD")
    return request


def is_s3_event(document: object) -> bool:
    """Tell whether a decoded message body is an S3 event notification (or its test event)."""
    if not isinstance(document, dict):
        return False
    return document.get("Event") == "s3:TestEvent" or "Records" in document


def requests_from_s3_event(
    document: dict, model_name: str, model_version: str, predictions_bucket: str,
    incoming_prefix: str = "incoming/",
) -> list[ScoreRequest]:
    """Turn an S3 event notification into score requests.

    The test event that S3 sends when a notification is configured yields no
    request. Keys arrive URL-encoded (a space as ``+``), so they are decoded.
    Only ``ObjectCreated`` events for Parquet objects under ``incoming_prefix``
    with a ``dt=YYYY-MM-DD/`` path segment are accepted.

    Raises:
        MessageError: a record is outside ``incoming_prefix`` or has no date.
    """
    if document.get("Event") == "s3:TestEvent":
        return []
    requests = []
    for record in document.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        if not key.startswith(incoming_prefix):
            raise MessageError(f"S3 event for s3://{bucket}/{key} is outside {incoming_prefix}")
        match = _DT_IN_KEY.search(key)
        if not match:
            raise MessageError(f"S3 event key {key!r} has no dt=YYYY-MM-DD/ segment")
        requests.append(
            make_request(f"s3://{bucket}/{key}", match.group(1), model_name, model_version,
                         predictions_bucket)
        )
    return requests
