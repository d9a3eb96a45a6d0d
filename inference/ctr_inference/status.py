"""The progress of one run: partitions done, failed and pending, rows, throughput, ETA, dead letters.

Everything comes from the run prefix (plan, outputs' metadata, failure
records, manifest, markers) and, when a queue URL is given, the depth of the
queue's dead-letter queue. Nothing here changes a run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from ctr_inference.errors import CtrError
from ctr_inference.runs import (
    FAILED,
    MANIFEST,
    SUCCESS,
    RunLocation,
    expected_partitions,
    list_run,
    read_failures,
    read_incoming_pin,
    read_output_stats,
    read_plan,
)
from ctr_inference.storage import get_json

# Run states, from the markers and the partition counts.
SUCCEEDED = "succeeded"
SANITY_FAILED = "sanity_failed"
BLOCKED = "blocked"  # every partition without an output has failed
RUNNING = "running"


@dataclass
class RunStatus:
    """A snapshot of one run."""

    run_id: str
    dt: str
    model_name: str
    model_version: str
    state: str
    output_prefix: str
    expected: int
    done: int
    failed: int
    dead_lettered: int
    pending: int
    rows: int
    elapsed_seconds: float | None
    rows_per_second: float | None
    eta_seconds: float | None
    dead_letter_queue_depth: int | None
    generation: int = 0
    failures: list[dict] = field(default_factory=list)
    sanity_failures: list[dict] = field(default_factory=list)

    def to_document(self) -> dict:
        return asdict(self)


def dead_letter_queue_url(sqs, queue_url: str) -> str | None:
    """Return the URL of the queue's dead-letter queue, from its redrive policy; None without one."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    policy = attributes.get("RedrivePolicy")
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"]
    # arn:aws:sqs:REGION:ACCOUNT:NAME
    _, _, _, _, account, name = arn.split(":", 5)
    return sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]


def queue_depth(sqs, queue_url: str) -> int:
    """Return the approximate number of visible plus in-flight messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0))


def run_status(s3, predictions_bucket: str, run_id: str, sqs=None, queue_url: str | None = None,
               now: float | None = None) -> RunStatus:
    """Collect the status of ``run_id``.

    Raises:
        CtrError: the run has no plan, no outputs and no failures, so it does not exist.
        MessageError: ``run_id`` is not ``YYYY-MM-DD.vVERSION``.
    """
    now = time.time() if now is None else now
    location = RunLocation.of_run_id(predictions_bucket, run_id)
    listing = list_run(s3, location)
    plan = read_plan(s3, location)
    pin = read_incoming_pin(s3, location.bucket, location.dt)
    if pin and pin.get("run_id") != run_id:
        pin = None
    incoming = pin.get("incoming_prefix") if pin else None
    if plan is None and not incoming and not listing.outputs and not listing.failures:
        raise CtrError(f"run {run_id} not found: no plan, outputs or failures under {location.uri}")

    expected = set(expected_partitions(s3, location, plan, incoming))
    if not expected:
        expected = listing.outputs | listing.failures
    done = expected & listing.outputs
    generation = plan.generation if plan else 0
    stats = None
    if generation:
        # After a forced dispatch, an output of an older generation is still pending.
        stats = read_output_stats(s3, location, sorted(done))
        done = {name for name in done if stats[name].generation >= generation}
    failed_names = (expected & listing.failures) - done
    pending = expected - done - failed_names
    failures = read_failures(s3, location, sorted(failed_names))

    manifest = get_json(s3, location.bucket, location.key(MANIFEST)) if listing.markers & {SUCCESS, FAILED} else None
    if (manifest and manifest.get("generation", 0) == generation
            and {p["name"] for p in manifest["partitions"]} == done):
        rows = manifest["rows"]
        timings = manifest["timings"]
        elapsed = timings.get("wall_seconds")
        rows_per_second = timings.get("rows_per_second")
    else:
        if stats is None:
            stats = read_output_stats(s3, location, sorted(done))
        stats = {name: item for name, item in stats.items() if name in done}
        rows = sum(item.rows for item in stats.values())
        starts = [item.started for item in stats.values() if item.started]
        ends = [item.finished for item in stats.values() if item.finished]
        first = min(starts) if starts else None
        # A run with nothing pending has stopped progressing: its clock stops at the last output.
        end = max(ends) if ends and not pending else now
        elapsed = end - first if first is not None else None
        rows_per_second = round(rows / elapsed, 1) if elapsed else None

    eta = None
    if pending and done and elapsed:
        eta = round(len(pending) * elapsed / len(done), 1)

    if SUCCESS in listing.markers:
        state = SUCCEEDED
    elif FAILED in listing.markers:
        state = SANITY_FAILED
    elif not pending and failed_names:
        state = BLOCKED
    else:
        state = RUNNING
    sanity_failures = []
    if state == SANITY_FAILED:
        marker = get_json(s3, location.bucket, location.key(FAILED)) or {}
        sanity_failures = marker.get("failures", [])

    depth = None
    if sqs is not None and queue_url:
        dlq = dead_letter_queue_url(sqs, queue_url)
        depth = queue_depth(sqs, dlq) if dlq else None

    if plan:
        model_name, model_version = plan.model_name, plan.model_version
    elif pin:
        model_name, model_version = pin["model"]["name"], str(pin["model"]["version"])
    else:
        model_name, model_version = "", run_id.partition(".v")[2]
    return RunStatus(
        run_id=run_id, dt=location.dt, model_name=model_name, model_version=model_version, state=state,
        output_prefix=location.uri, expected=len(expected), done=len(done), failed=len(failed_names),
        dead_lettered=sum(1 for record in failures if record.dead_lettered), pending=len(pending),
        rows=rows, elapsed_seconds=round(elapsed, 3) if elapsed is not None else None,
        rows_per_second=rows_per_second, eta_seconds=eta, dead_letter_queue_depth=depth, generation=generation,
        failures=[asdict(record) for record in failures], sanity_failures=sanity_failures,
    )


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def progress_bar(done: int, failed: int, total: int, width: int = 40) -> str:
    """Draw ``[####xx....]``: ``#`` done, ``x`` failed, ``.`` pending."""
    if total <= 0:
        return "[" + " " * width + "]"
    filled = round(width * done / total)
    broken = min(width - filled, round(width * failed / total))
    return "[" + "#" * filled + "x" * broken + "." * (width - filled - broken) + "]"


def render_text(status: RunStatus, width: int = 40) -> str:
    """Render a status for a terminal: a progress bar, the counts and every failure's reason."""
    percent = 100.0 * status.done / status.expected if status.expected else 0.0
    model = f"model {status.model_name} version {status.model_version}" if status.model_name else (
        f"model version {status.model_version}")
    lines = [
        f"run {status.run_id} ({model}): {status.state}",
        (f"{progress_bar(status.done, status.failed, status.expected, width)} {percent:5.1f}%  "
        f"{status.done}/{status.expected} partitions"),
        (f"done {status.done}  failed {status.failed} (dead-lettered {status.dead_lettered})  "
        f"pending {status.pending}"),
        (f"rows {status.rows:,}  rows/s {status.rows_per_second or 0:,.1f}  "
        f"elapsed {format_seconds(status.elapsed_seconds)}  ETA {format_seconds(status.eta_seconds)}"),
    ]
    if status.dead_letter_queue_depth is not None:
        lines.append(f"dead-letter queue: {status.dead_letter_queue_depth} messages (all runs)")
    if status.failures:
        lines.append("failed partitions:")
        for record in status.failures:
            last = ", dead-lettered" if record.get("dead_lettered") else ""
            lines.append(f"  {record['partition']}: {record['reason']} (receive {record['receive_count']}{last}): "
                         f"{record['error']}")
    for failure in status.sanity_failures:
        lines.append(f"sanity check failed: {failure['message']}")
    lines.append(f"outputs: {status.output_prefix}")
    return "\n".join(lines)
