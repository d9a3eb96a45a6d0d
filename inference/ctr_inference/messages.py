"""Score requests on the queue, and the S3 key layout they point into.

A score request is a small versioned JSON document, one per feature partition::

    {"type": "ctr.score-request", "version": 1,
     "run_id": "2026-12-03.v4", "dt": "2026-12-03", "partition": "part-00007",
     "input": "s3://features/dt=2026-12-03/part-00007.parquet",
     "output": "s3://predictions/dt=2026-12-03/run=2026-12-03.v4/part-00007.parquet",
     "model": {"name": "ctr-criteo", "version": "4"}, "generation": 0}

The output key depends only on the run and the partition, so a redelivered
request overwrites the same object with the same content. S3 event
notifications for ``incoming/`` objects are turned into the same document.
Their partition names start with ``incoming-``, so they do not collide with
the dispatcher's ``part-NNNNN`` partitions of the same run.

``generation`` counts the forced dispatches of a run (``ctr dispatch --force``).
It was added within version 1, so a reader treats a missing field as 0.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass

from ctr_inference.errors import MessageError

MESSAGE_TYPE = "ctr.score-request"
MESSAGE_VERSION = 1

INCOMING_PREFIX = "incoming/"
INCOMING_PARTITION_PREFIX = "incoming-"

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


def run_dt(run_id: str) -> str:
    """Return the date of a run id made by ``run_id_for``.

    Raises:
        MessageError: the run id does not start with ``YYYY-MM-DD.v``.
    """
    dt, separator, version = run_id.partition(".v")
    if not _DATE.match(dt) or not separator or not version:
        raise MessageError(f"invalid run id {run_id!r}, expected YYYY-MM-DD.vVERSION")
    return dt


def is_marker_name(key: str) -> bool:
    """Tell whether a key's file name is a marker or hidden file (``_SUCCESS``, ``.crc``), not data."""
    name = key.rsplit("/", 1)[-1]
    return not name or name.startswith(("_", "."))


def partition_name(key: str) -> str:
    """Return a partition's name from its key: the file name without ``.parquet``."""
    name = key.rsplit("/", 1)[-1]
    return name.removesuffix(".parquet")


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
    generation: int = 0

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
                "generation": self.generation,
            },
            sort_keys=True,
        )

    @property
    def output_prefix(self) -> str:
        return self.output_uri.rsplit("/", 1)[0] + "/"


def make_request(
    input_uri: str, dt: str, model_name: str, model_version: str, predictions_bucket: str,
    generation: int = 0, predictions_prefix: str = DEFAULT_PREDICTIONS_PREFIX,
) -> ScoreRequest:
    """Build the request that scores ``input_uri`` in the run of ``dt`` and ``model_version``."""
    _, key = split_s3_uri(input_uri)
    partition = partition_name(key)
    run_id = run_id_for(dt, model_version)
    output = run_prefix(predictions_bucket, dt, run_id, predictions_prefix) + f"{partition}.parquet"
    return ScoreRequest(run_id, dt, partition, input_uri, output, model_name, str(model_version), generation)


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
            generation=int(document.get("generation", 0)),
        )
    except (KeyError, TypeError, ValueError) as error:
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


@dataclass(frozen=True)
class IncomingObject:
    """An object named by an S3 event notification, with its decoded key and date."""

    bucket: str
    key: str
    dt: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def date_prefix(self) -> str:
        """The ``s3://`` prefix that contains every incoming object of this date."""
        return f"s3://{self.bucket}/{self.key[: self.key.index(f'dt={self.dt}/') + len(self.dt) + 4]}"


def incoming_partition_name(key: str, dt: str) -> str:
    """Return the partition name of an ``incoming/`` object.

    The name is the key below ``dt=YYYY-MM-DD/`` without ``.parquet``, with
    ``/`` replaced by ``__`` so nested keys stay distinct, and the prefix
    ``incoming-``.
    """
    marker = f"dt={dt}/"
    relative = key[key.index(marker) + len(marker):] if marker in key else key.rsplit("/", 1)[-1]
    relative = relative.removesuffix(".parquet")
    return INCOMING_PARTITION_PREFIX + relative.replace("/", "__")


def s3_event_objects(document: dict, incoming_prefix: str = INCOMING_PREFIX) -> list[IncomingObject]:
    """Return the created objects that an S3 event notification names.

    The test event that S3 sends when a notification is configured yields
    nothing, and so do marker and hidden files (``_SUCCESS``, ``.crc``).
    Keys arrive URL-encoded (a space as ``+``), so they are decoded. Only
    ``ObjectCreated`` events under ``incoming_prefix`` with a
    ``dt=YYYY-MM-DD/`` path segment are accepted.

    Raises:
        MessageError: a record is malformed, outside ``incoming_prefix`` or has no date.
    """
    if document.get("Event") == "s3:TestEvent":
        return []
    objects = []
    for record in document.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        except (KeyError, TypeError) as error:
            raise MessageError(f"S3 event record is missing field {error}") from error
        if not key.startswith(incoming_prefix):
            raise MessageError(f"S3 event for s3://{bucket}/{key} is outside {incoming_prefix}")
        match = _DT_IN_KEY.search(key)
        if not match:
            raise MessageError(f"S3 event key {key!r} has no dt=YYYY-MM-DD/ segment")
        if is_marker_name(key):
            continue
        objects.append(IncomingObject(bucket, key, match.group(1)))
    return objects


def make_incoming_request(
    item: IncomingObject, model_name: str, model_version: str, predictions_bucket: str
) -> ScoreRequest:
    """Build the request that scores one ``incoming/`` object in the run of its date."""
    partition = incoming_partition_name(item.key, item.dt)
    run_id = run_id_for(item.dt, model_version)
    output = run_prefix(predictions_bucket, item.dt, run_id) + f"{partition}.parquet"
    return ScoreRequest(run_id, item.dt, partition, item.uri, output, model_name, str(model_version))


def requests_from_s3_event(
    document: dict, model_name: str, model_version: str, predictions_bucket: str,
    incoming_prefix: str = INCOMING_PREFIX,
) -> list[ScoreRequest]:
    """Turn an S3 event notification into score requests for one model version.

    Raises:
        MessageError: as ``s3_event_objects``.
    """
    return [make_incoming_request(item, model_name, model_version, predictions_bucket)
            for item in s3_event_objects(document, incoming_prefix)]
