"""Scoring commands: ``ctr dispatch``, ``ctr worker``, ``ctr status``, ``ctr redrive`` and ``ctr compare``."""

from __future__ import annotations

import functools
import os
import sys

from ctr.aws import aws_errors

DEMO_RUN_HINT = ("`ctr demo` stops its S3/SQS emulator when it ends, so a demo run is summarized in "
                 ".ctr/reports/RUN.json instead")


def register(subparsers) -> None:
    dispatch = subparsers.add_parser("dispatch", help="queue one score request per feature partition of a date")
    dispatch.add_argument("--dt", required=True, help="date of the feature partitions, YYYY-MM-DD")
    dispatch.add_argument("--model-version", default=os.environ.get("MODEL_VERSION"),
                          help="model version the run must use (default: $MODEL_VERSION, else the highest "
                               "version in the model store)")
    dispatch.add_argument("--model-name", default=os.environ.get("MODEL_NAME", "ctr-criteo"),
                          help="registered model name (default: $MODEL_NAME or ctr-criteo)")
    _queue_option(dispatch)
    dispatch.add_argument("--features-bucket", default=os.environ.get("FEATURES_BUCKET"),
                          help="S3 bucket of the feature partitions (default: $FEATURES_BUCKET)")
    _predictions_option(dispatch)
    dispatch.add_argument("--predictions-prefix", default=os.environ.get("PREDICTIONS_PREFIX", "predictions/"),
                          help="key prefix of the outputs in the predictions bucket "
                               "(default: $PREDICTIONS_PREFIX or predictions/)")
    dispatch.add_argument("--model-store-uri", default=os.environ.get("MODEL_STORE_URI"),
                          help="s3:// prefix of the model store, for the default version (default: $MODEL_STORE_URI)")
    dispatch.add_argument("--force", action="store_true", help="queue partitions that already have an output")
    dispatch.set_defaults(handler=run_dispatch)

    worker = subparsers.add_parser("worker", help="run the SQS inference worker (configured by environment, "
                                                  "see docs/worker.md)")
    worker.set_defaults(handler=run_worker)

    status = subparsers.add_parser(
        "status", help="show a run's partitions done, failed and pending, rows, throughput, ETA and "
                       "dead-letter queue depth",
        description="Reads the run from the predictions bucket of a deployed environment, or of the S3 server "
                    "at $AWS_ENDPOINT_URL. `ctr demo` stops its S3/SQS emulator when it ends, so a demo run "
                    "is summarized in .ctr/reports/RUN.json instead.")
    status.add_argument("run_id", metavar="RUN", help="run id, YYYY-MM-DD.vVERSION")
    _predictions_option(status)
    status.add_argument("--queue-url", default=os.environ.get("QUEUE_URL"),
                        help="URL of the SQS scoring queue, for the dead-letter queue depth (default: $QUEUE_URL)")
    status.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    status.add_argument("--watch", type=float, metavar="SECONDS",
                        help="refresh every SECONDS until the run succeeds or fails (terminal only)")
    status.set_defaults(handler=run_status)

    redrive = subparsers.add_parser("redrive", help="move a run's dead-lettered messages back to the queue")
    redrive.add_argument("run_id", metavar="RUN", help="run id, YYYY-MM-DD.vVERSION")
    _queue_option(redrive)
    redrive.add_argument("--dead-letter-queue-url",
                         help="URL of the dead-letter queue (default: from the queue's redrive policy)")
    _predictions_option(redrive)
    redrive.add_argument("--dry-run", action="store_true", help="list what would move, move nothing")
    redrive.set_defaults(handler=run_redrive)

    compare = subparsers.add_parser("compare", help="score the same partitions with the baked and the S3 "
                                                    "model source and compare start-up and predictions")
    compare.add_argument("--bundle-path", default=os.environ.get("BUNDLE_PATH"),
                         help="baked bundle directory (default: $BUNDLE_PATH)")
    compare.add_argument("--bundle-uri", default=os.environ.get("BUNDLE_URI"),
                         help="s3:// prefix of the same bundle (default: $BUNDLE_URI)")
    compare.add_argument("--partition", action="append", default=[], metavar="URI",
                         help="s3:// URI of a feature partition; repeat for more")
    compare.add_argument("--dt", help="take the partitions of this date instead of --partition")
    compare.add_argument("--features-bucket", default=os.environ.get("FEATURES_BUCKET"),
                         help="S3 bucket of the feature partitions, with --dt (default: $FEATURES_BUCKET)")
    compare.add_argument("--limit", type=int, default=4, help="with --dt: partitions to score (default: 4)")
    compare.add_argument("--threads", type=int, default=1, help="scoring threads per source (default: 1)")
    compare.add_argument("--workdir", default=".ctr/compare",
                         help="folder for caches and predictions (default: .ctr/compare)")
    compare.set_defaults(handler=run_compare)


def _queue_option(parser) -> None:
    parser.add_argument("--queue-url", default=os.environ.get("QUEUE_URL"),
                        help="URL of the SQS scoring queue (default: $QUEUE_URL)")


def _predictions_option(parser) -> None:
    parser.add_argument("--predictions-bucket", default=os.environ.get("PREDICTIONS_BUCKET"),
                        help="S3 bucket the workers write predictions and run markers to "
                             "(default: $PREDICTIONS_BUCKET)")


def _require(args, *options: str, hint: str = "") -> None:
    """Raise a CtrError naming the first missing option and its environment variable.

    Every option here defaults to the environment variable of its own name in
    upper case (``--queue-url`` to ``QUEUE_URL``).
    """
    from ctr_inference.errors import CtrError

    for option in options:
        if not getattr(args, option):
            raise CtrError(f"--{option.replace('_', '-')} is required: pass it or set {option.upper()}"
                           + (f"; {hint}" if hint else ""))


def _aws_command(hint: str = ""):
    """Decorate a handler so that S3/SQS setup and request errors end it with one line, not a traceback."""
    def decorate(handler):
        @functools.wraps(handler)
        def run(args) -> int:
            with aws_errors(hint):
                return handler(args)
        return run
    return decorate


@_aws_command()
def run_dispatch(args) -> int:
    import boto3
    from ctr_inference.dispatch import dispatch, latest_model_version

    _require(args, "queue_url", "features_bucket", "predictions_bucket")
    s3 = boto3.client("s3")
    version = args.model_version
    if not version:
        _require(args, "model_store_uri")
        version = latest_model_version(s3, args.model_store_uri, args.model_name)
        print(f"model version {version}: the highest version of {args.model_name} in {args.model_store_uri}",
              file=sys.stderr)
    result = dispatch(s3, boto3.client("sqs"), args.queue_url, args.features_bucket, args.predictions_bucket,
                      args.dt, args.model_name, version, force=args.force,
                      predictions_prefix=args.predictions_prefix)
    print(f"run {result.run_id}: {len(result.sent)} partitions queued, {len(result.skipped)} already scored")
    if result.completion:
        print(f"run {result.run_id} was complete without a marker; finalized it: {result.completion}")
    return 0


def run_worker(args) -> int:
    from ctr_inference.worker import main

    return main()


@_aws_command(DEMO_RUN_HINT)
def run_status(args) -> int:
    import json
    import time

    import boto3
    from ctr_inference.status import RUNNING, render_text
    from ctr_inference.status import run_status as collect

    _require(args, "predictions_bucket", hint=DEMO_RUN_HINT)
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs") if args.queue_url else None
    terminal = sys.stdout.isatty() and not args.json
    while True:
        status = collect(s3, args.predictions_bucket, args.run_id, sqs=sqs, queue_url=args.queue_url)
        if not terminal:
            print(json.dumps(status.to_document(), indent=2, sort_keys=True))
            break
        if args.watch:
            print("\033[2J\033[H", end="")
        print(render_text(status))
        if not args.watch or status.state != RUNNING:
            break
        time.sleep(args.watch)
    return 0


@_aws_command()
def run_redrive(args) -> int:
    import boto3
    from ctr_inference.redrive import redrive

    _require(args, "queue_url")
    result = redrive(boto3.client("sqs"), args.queue_url, args.run_id, s3=boto3.client("s3"),
                     predictions_bucket=args.predictions_bucket or "",
                     dead_letter_queue=args.dead_letter_queue_url, dry_run=args.dry_run)
    verb = "would move" if args.dry_run else "moved"
    print(f"run {args.run_id}: {verb} {len(result.moved)} dead-lettered partitions back to the queue"
          + (f" ({', '.join(result.moved)})" if result.moved else "")
          + f"; left {result.other_messages} messages of other runs in {result.dead_letter_queue_url}")
    return 0


@_aws_command()
def run_compare(args) -> int:
    import json
    from pathlib import Path

    import boto3
    from ctr_inference.compare import compare_sources
    from ctr_inference.dispatch import feature_partitions
    from ctr_inference.errors import CtrError

    _require(args, "bundle_path", "bundle_uri")
    partitions = list(args.partition)
    if args.dt:
        _require(args, "features_bucket")
        partitions += feature_partitions(boto3.client("s3"), args.features_bucket, args.dt)[: args.limit]
    if not partitions:
        raise CtrError("give --partition URI (repeatable) or --dt DATE with --features-bucket")
    report = compare_sources(args.bundle_path, args.bundle_uri, partitions, Path(args.workdir), args.threads)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0
