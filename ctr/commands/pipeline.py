"""Training-side commands: ``ctr generate-logs``, ``ctr features``, ``ctr train``, ``ctr models list|compare``
and ``ctr train-job``.

``dvc repro`` is the training pipeline. ``ctr features`` and ``ctr train`` run
single steps by hand, and ``ctr train-job`` runs the whole pipeline as a
Kubernetes Job on the cluster's training nodes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TIMEOUT_EXIT_CODE = 124
LOCAL_STORE_NOTE = "the demo's local store .ctr/mlflow/mlflow.db (no server needed)"


def register(subparsers) -> None:
    generate = subparsers.add_parser("generate-logs", help="write synthetic Criteo-format click logs")
    generate.add_argument("output", type=Path, help="output file (.gz for gzip)")
    generate.add_argument("--rows", type=int, default=1_000_000, help="lines to write (default: 1000000)")
    generate.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    generate.set_defaults(handler=run_generate)

    features = subparsers.add_parser("features", help="run the Spark feature job on click logs")
    features.add_argument("logs", nargs="+", help="log files or folders, plain or gzip, local or URIs")
    features.add_argument("--out", required=True, help="output folder for part-NNNNN.parquet")
    features.add_argument("--encoding", required=True,
                          help="encoding table: written with --fit, read otherwise (from a model bundle)")
    features.add_argument("--fit", action="store_true", help="fit the categorical encoding on these logs")
    _add_dataset_option(features)
    features.add_argument("--min-count", type=int, default=5,
                          help="values seen fewer times encode as unseen (default: 5)")
    features.add_argument("--partitions", type=int, default=8, help="output partitions (default: 8)")
    features.add_argument("--max-malformed-fraction", type=float, default=0.01,
                          help="fail when more than this share of lines is malformed (default: 0.01)")
    features.set_defaults(handler=run_features)

    train = subparsers.add_parser(
        "train", help="train LightGBM on feature partitions and register it in MLflow",
        description=f"Logs to the MLflow tracking server at $MLFLOW_TRACKING_URI, else to {LOCAL_STORE_NOTE}.")
    train.add_argument("--features", type=Path, required=True, help="folder of training feature partitions")
    train.add_argument("--encoding", type=Path, required=True, help="the encoding table the features used")
    _add_dataset_option(train)
    train.add_argument("--model-name", help="registered model name (default: the dataset's, e.g. ctr-criteo)")
    train.add_argument("--experiment", default="ctr-criteo", help="MLflow experiment (default: ctr-criteo)")
    train.add_argument("--trees", type=int, default=100, help="boosting rounds (default: 100)")
    train.add_argument("--leaves", type=int, default=31, help="num_leaves (default: 31)")
    train.add_argument("--alias", default="champion", help="alias to point at the new version (default: champion)")
    train.set_defaults(handler=run_train)

    models = subparsers.add_parser("models", help="inspect registered model versions")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")
    listing = model_commands.add_parser(
        "list", help="list the versions of a registered model with aliases, run and AUC",
        description=f"Reads the MLflow registry at $MLFLOW_TRACKING_URI, else {LOCAL_STORE_NOTE}.")
    listing.add_argument("--model-name", default="ctr-criteo", help="registered model name (default: ctr-criteo)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)

    compare = model_commands.add_parser(
        "compare", help="print the metrics of two model versions side by side",
        description="A and B are versions (3, v3), aliases (champion, @challenger) or models:/NAME/3 "
                    "and models:/NAME@ALIAS. The registry is the one at $MLFLOW_TRACKING_URI, else "
                    f"{LOCAL_STORE_NOTE}.")
    compare.add_argument("a", metavar="A", help="first version or alias")
    compare.add_argument("b", metavar="B", help="second version or alias")
    compare.add_argument("--model-name", default="ctr-criteo", help="registered model name (default: ctr-criteo)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")
    compare.set_defaults(handler=run_compare)

    job = subparsers.add_parser(
        "train-job", help="run the training pipeline (dvc repro) as a Kubernetes Job and follow it",
        description="Creates a batch/v1 Job on the training nodes, streams its log, and exits with the "
                    f"container's exit code ({TIMEOUT_EXIT_CODE} on timeout). The last line printed "
                    "is JSON with the job name, exit code and MLflow run id.")
    job.add_argument("--image", default=os.environ.get("CTR_TRAINING_IMAGE"),
                     help="training image reference (default: $CTR_TRAINING_IMAGE)")
    job.add_argument("--namespace", default="ctr", help="namespace of the Job (default: ctr)")
    job.add_argument("--name", help="Job name (default: ctr-train-<git short sha>-<time>)")
    job.add_argument("--timeout", type=float, default=6 * 3600,
                     help="seconds to wait before deleting the Job (default: 21600)")
    job.add_argument("command", nargs="*", metavar="-- COMMAND",
                     help="container command after `--` (default: dvc pull, dvc repro, dvc push against "
                          "the s3 remote)")
    job.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                     help="extra environment variable for the container (repeatable)")
    job.add_argument("--cpu", default="8", help="CPU request (default: 8)")
    job.add_argument("--memory", default="32Gi", help="memory request and limit (default: 32Gi)")
    job.add_argument("--service-account", default="ctr-training",
                     help="ServiceAccount with the training role (default: ctr-training)")
    job.add_argument("--kubeconfig", default="", help="kubeconfig file (default: $KUBECONFIG, "
                     "~/.kube/config, or the pod's service account)")
    job.add_argument("--context", default="", help="kubeconfig context (default: the current one)")
    job.add_argument("--poll-seconds", type=float, default=2.0, help="status poll interval (default: 2)")
    job.add_argument("--checkout", type=Path, default=Path("."),
                     help="where to write the files the Job returns (dvc.lock, metrics, ...) after a "
                          "successful run (default: .)")
    job.add_argument("--no-write-files", action="store_true", help="do not write the returned files")
    job.add_argument("--dry-run", action="store_true", help="print the Job manifest as JSON and exit")
    job.set_defaults(handler=run_train_job)


def _add_dataset_option(parser) -> None:
    parser.add_argument("--dataset", default="criteo",
                        help="dataset spec: a key of `datasets` in --params, or a built-in one "
                             "(criteo, avazu) when the file is absent (default: criteo)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file holding the dataset specs (default: params.yaml)")


def _dataset_spec(args):
    import yaml
    from ctr_training.datasets import BUILTIN, DatasetSpecError, spec_from_params

    if args.params.is_file():
        return spec_from_params(yaml.safe_load(args.params.read_text()) or {}, args.dataset)
    if args.dataset not in BUILTIN:
        raise DatasetSpecError(f"dataset {args.dataset!r} is not built in and {args.params} does not exist")
    return BUILTIN[args.dataset]


def run_generate(args) -> int:
    from ctr_training.synth import write_logs

    print(write_logs(args.output, args.rows, seed=args.seed))
    return 0


def run_features(args) -> int:
    import json

    from ctr_training.features import run_feature_job, spark_session

    spec = _dataset_spec(args)
    spark = spark_session(master=None)
    try:
        result = run_feature_job(spark, list(args.logs), args.out, encoding_path=args.encoding, fit=args.fit,
                                 min_count=args.min_count, partitions=args.partitions,
                                 max_malformed_fraction=args.max_malformed_fraction, spec=spec)
    finally:
        spark.stop()
    print(json.dumps({"rows": result.rows, "partitions": [str(p) for p in result.partitions],
                      "malformed": result.malformed.to_dict()}, indent=2))
    return 0


def run_train(args) -> int:
    from ctr_training.stages import configure_mlflow
    from ctr_training.train import train_and_register

    spec = _dataset_spec(args)
    # Without MLFLOW_TRACKING_URI, MLflow would create a new store in the current folder.
    configure_mlflow(Path.cwd(), args.experiment)
    result = train_and_register(args.features, args.encoding, model_name=args.model_name or spec.registered_model,
                                experiment=args.experiment, categorical=list(spec.categorical),
                                lgb_params={"num_leaves": args.leaves}, num_boost_round=args.trees,
                                alias=args.alias)
    print(f"run {result.run_id}: {result.model_name} version {result.model_version} {result.metrics}")
    return 0


def run_list(args) -> int:
    import json
    from dataclasses import asdict

    from ctr_training.registry import list_versions, render_versions

    from ctr.tracking import use_tracking_store

    use_tracking_store()
    versions = list_versions(args.model_name)
    if args.json:
        print(json.dumps([asdict(v) for v in versions], indent=2, sort_keys=True))
    else:
        print(render_versions(versions))
    return 0


def run_compare(args) -> int:
    import json
    from dataclasses import asdict

    from ctr_training.registry import render_comparison, resolve

    from ctr.tracking import use_tracking_store

    use_tracking_store()
    a, b = resolve(args.a, args.model_name), resolve(args.b, args.model_name)
    if args.json:
        print(json.dumps({"a": asdict(a), "b": asdict(b)}, indent=2, sort_keys=True))
    else:
        print(render_comparison(a, b))
    return 0


def run_train_job(args) -> int:
    import json

    from ctr_inference.errors import CtrError
    from ctr_training.k8s_job import (
        DEFAULT_COMMAND,
        TrainingJobFailedError,
        TrainingJobRunner,
        TrainingJobSpec,
        TrainingJobTimeoutError,
        api_client,
        job_name,
    )
    from ctr_training.train import git_commit

    if not args.image:
        raise CtrError("--image is required (or set CTR_TRAINING_IMAGE)")
    commit = git_commit(Path.cwd())
    env = {"DVC_NO_ANALYTICS": "1", "CTR_GIT_COMMIT": commit}
    for name in ("MLFLOW_TRACKING_URI", "AWS_REGION"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    for item in args.env:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise CtrError(f"--env {item!r} is not KEY=VALUE")
        env[key] = value
    spec = TrainingJobSpec(name=args.name or job_name(commit), image=args.image,
                           command=args.command or list(DEFAULT_COMMAND), env=env, cpu=args.cpu,
                           memory=args.memory, service_account=args.service_account or None,
                           active_deadline_seconds=int(args.timeout), labels={"ctr.ai/git-commit": commit[:40]})
    if args.dry_run:
        print(json.dumps(spec.manifest(), indent=2))
        return 0

    runner = TrainingJobRunner(api_client(args.kubeconfig, args.context), args.namespace, args.poll_seconds)
    outcome = {"job": spec.name, "namespace": args.namespace}
    try:
        result = runner.run(spec, args.timeout)
    except TrainingJobFailedError as error:
        print(f"ctr train-job: error: {error}", file=sys.stderr)
        outcome.update(succeeded=False, exit_code=error.result.exit_code, mlflow_run_id=error.result.run_id,
                       reason=error.result.reason)
        print(json.dumps(outcome))
        return error.result.exit_code or 1
    except TrainingJobTimeoutError as error:
        print(f"ctr train-job: error: {error}", file=sys.stderr)
        outcome.update(succeeded=False, exit_code=None, mlflow_run_id=None, reason="Timeout")
        print(json.dumps(outcome))
        return TIMEOUT_EXIT_CODE
    written = [] if args.no_write_files else _write_returned(result.files, args.checkout)
    outcome.update(succeeded=True, exit_code=result.exit_code, mlflow_run_id=result.run_id, reason=result.reason,
                   files=written)
    print(json.dumps(outcome))
    return 0


def _write_returned(files: dict[str, bytes], checkout: Path) -> list[str]:
    """Write the files a training Job returned (relative paths) under ``checkout``."""
    written = []
    for relative, content in sorted(files.items()):
        target = checkout / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(relative)
    return written
