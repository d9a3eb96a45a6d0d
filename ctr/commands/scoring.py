"""Scoring commands: ``ctr dispatch`` and ``ctr worker``."""

from __future__ import annotations

import os


def register(subparsers) -> None:
    dispatch = subparsers.add_parser("dispatch", help="queue one score request per feature partition of a date")
    dispatch.add_argument("--dt", required=True, help="date of the feature partitions, YYYY-MM-DD")
    dispatch.add_argument("--model-version", default=os.environ.get("MODEL_VERSION"),
                          help="model version the run must use (default: $MODEL_VERSION)")
    dispatch.add_argument("--model-name", default=os.environ.get("MODEL_NAME", "ctr-criteo"),
                          help="registered model name (default: $MODEL_NAME or ctr-criteo)")
    dispatch.add_argument("--queue-url", default=os.environ.get("QUEUE_URL"), help="default: $QUEUE_URL")
    dispatch.add_argument("--features-bucket", default=os.environ.get("FEATURES_BUCKET"),
                          help="default: $FEATURES_BUCKET")
    dispatch.add_argument("--predictions-bucket", default=os.environ.get("PREDICTIONS_BUCKET"),
                          help="default: $PREDICTIONS_BUCKET")
    dispatch.add_argument("--predictions-prefix",
                          default=os.environ.get("PREDICTIONS_PREFIX", "predictions/"),
                          help="key prefix of the outputs in the predictions bucket "
                               "(default: $PREDICTIONS_PREFIX or predictions/)")
    dispatch.add_argument("--force", action="store_true", help="queue partitions that already have an output")
    dispatch.set_defaults(handler=run_dispatch)

    worker = subparsers.add_parser("worker", help="run the SQS inference worker (configured by environment)")
    worker.set_defaults(handler=lambda args: __import__("ctr_inference.worker").worker.main())


def run_dispatch(args) -> int:
    import boto3

    from ctr_inference.dispatch import dispatch
    from ctr_inference.errors import CtrError

    for option in ("model_version", "queue_url", "features_bucket", "predictions_bucket"):
        if not getattr(args, option):
            raise CtrError(f"--{option.replace('_', '-')} is required (or its environment variable)")
    result = dispatch(boto3.client("s3"), boto3.client("sqs"), args.queue_url, args.features_bucket,
                      args.predictions_bucket, args.dt, args.model_name, args.model_version, force=args.force,
                      predictions_prefix=args.predictions_prefix)
    print(f"run {result.run_id}: {len(result.sent)} partitions queued, {len(result.skipped)} already scored")
    return 0
