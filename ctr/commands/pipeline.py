"""Training-side commands: ``ctr generate-logs``, ``ctr features``, ``ctr train``."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    generate = subparsers.add_parser("generate-logs", help="write synthetic Criteo-format click logs")
    generate.add_argument("output", type=Path, help="output file (.gz for gzip)")
    generate.add_argument("--rows", type=int, default=1_000_000, help="lines to write (default: 1000000)")
    generate.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    generate.set_defaults(handler=run_generate)

    features = subparsers.add_parser("features", help="run the Spark feature job on click logs")
    features.add_argument("logs", nargs="+", help="Criteo-format log files, plain or gzip")
    features.add_argument("--out", type=Path, required=True, help="output folder for part-NNNNN.parquet")
    features.add_argument("--encoding", type=Path, required=True,
                          help="encoding table: written with --fit, read otherwise (from a model bundle)")
    features.add_argument("--fit", action="store_true", help="fit the categorical encoding on these logs")
    features.add_argument("--min-count", type=int, default=5,
                          help="values seen fewer times encode as unseen (default: 5)")
    features.add_argument("--partitions", type=int, default=8, help="output partitions (default: 8)")
    features.add_argument("--max-malformed-fraction", type=float, default=0.01,
                          help="fail when more than this share of lines is malformed (default: 0.01)")
    features.set_defaults(handler=run_features)

    train = subparsers.add_parser("train", help="train LightGBM on feature partitions and register it in MLflow")
    train.add_argument("--features", type=Path, required=True, help="folder of training feature partitions")
    train.add_argument("--encoding", type=Path, required=True, help="the encoding table the features used")
    train.add_argument("--model-name", default="ctr-criteo", help="registered model name (default: ctr-criteo)")
    train.add_argument("--experiment", default="ctr-criteo", help="MLflow experiment (default: ctr-criteo)")
    train.add_argument("--trees", type=int, default=100, help="boosting rounds (default: 100)")
    train.add_argument("--leaves", type=int, default=31, help="num_leaves (default: 31)")
    train.set_defaults(handler=run_train)


def run_generate(args) -> int:
    from ctr_training.synth import write_logs

    print(write_logs(args.output, args.rows, seed=args.seed))
    return 0


def run_features(args) -> int:
    import json

    from ctr_training.features import run_feature_job, spark_session

    spark = spark_session()
    try:
        result = run_feature_job(spark, list(args.logs), args.out, encoding_path=args.encoding, fit=args.fit,
                                 min_count=args.min_count, partitions=args.partitions,
                                 max_malformed_fraction=args.max_malformed_fraction)
    finally:
        spark.stop()
    print(json.dumps({"rows": result.rows, "partitions": [str(p) for p in result.partitions],
                      "malformed": result.malformed.to_dict()}, indent=2))
    return 0


def run_train(args) -> int:
    from ctr_training import criteo
    from ctr_training.train import train_and_register

    result = train_and_register(args.features, args.encoding, model_name=args.model_name,
                                experiment=args.experiment, categorical=criteo.CATEGORICAL_COLUMNS,
                                lgb_params={"num_leaves": args.leaves}, num_boost_round=args.trees)
    print(f"run {result.run_id}: {result.model_name} version {result.model_version} {result.metrics}")
    return 0
