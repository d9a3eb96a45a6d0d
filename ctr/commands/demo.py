"""``ctr demo`` and ``ctr mlflow-ui``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# Fields of the run report printed at the end of the demo; README.md lists them.
SUMMARY_FIELDS = ("run_id", "model_name", "model_version", "rows_in", "rows_scored", "partitions", "auc",
                  "logloss", "rows_per_second", "image_reference", "mlflow_run_id", "output_location")


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="run the whole loop on one machine with local services")
    demo.add_argument("--workdir", type=Path, default=Path(".ctr"),
                      help="folder for everything the run leaves behind (default: .ctr)")
    demo.add_argument("--train-logs", action="append", default=[], metavar="PATH",
                      help="Criteo-format training logs, plain or gzip; alone, the file is split by line order")
    demo.add_argument("--score-logs", action="append", default=[], metavar="PATH",
                      help="Criteo-format logs to score, plain or gzip")
    demo.add_argument("--rows", type=int, default=1_000_000,
                      help="rows to generate when no logs are given (default: 1000000)")
    demo.add_argument("--train-fraction", type=float, default=0.8,
                      help="share of the lines that trains when one file is split (default: 0.8)")
    demo.add_argument("--dt", help="scoring date YYYY-MM-DD (default: today)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    demo.add_argument("--partitions", type=int, default=8, help="feature partitions to score (default: 8)")
    demo.add_argument("--trees", type=int, default=100, help="LightGBM boosting rounds (default: 100)")
    demo.add_argument("--leaves", type=int, default=31, help="LightGBM num_leaves (default: 31)")
    demo.add_argument("--max-malformed-fraction", type=float, default=0.01,
                      help="fail when more than this share of lines is malformed (default: 0.01)")
    demo.add_argument("--moto-port", type=int, help="S3/SQS emulator port (default: a free port)")
    demo.add_argument("--mlflow-port", type=int, help="MLflow port (default: a free port)")
    demo.add_argument("--timeout", type=float, default=900, help="seconds to wait for scoring (default: 900)")
    demo.set_defaults(handler=run_demo)

    ui = subparsers.add_parser("mlflow-ui", help="serve the MLflow UI on the demo's store")
    ui.add_argument("--workdir", type=Path, default=Path(".ctr"),
                    help="work directory of the demo whose mlflow/ store to serve (default: .ctr)")
    ui.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 to serve on (default: 5000)")
    ui.set_defaults(handler=run_mlflow_ui)


def run_demo(args) -> int:
    import json

    from ctr.demo import DemoConfig
    from ctr.demo import run_demo as run

    config = DemoConfig(
        workdir=args.workdir, train_logs=args.train_logs, score_logs=args.score_logs, rows=args.rows,
        train_fraction=args.train_fraction, workers=args.workers, partitions=args.partitions,
        num_boost_round=args.trees, num_leaves=args.leaves, max_malformed_fraction=args.max_malformed_fraction,
        moto_port=args.moto_port, mlflow_port=args.mlflow_port, timeout=args.timeout,
    )
    if args.dt:
        config.dt = args.dt
    # A stopped demo (SIGTERM) unwinds like Ctrl-C, so it still stops its services.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    report = run(config)
    print(json.dumps(summarize(report), indent=2))
    print(f"\nrun report: {report['report_path']}")
    print(f"predictions: {report['local_copy']}")
    print("MLflow UI: make mlflow-ui, then open http://127.0.0.1:5000")
    return 0


def summarize(report: dict) -> dict:
    """Return the fields of a run report that the demo prints at the end."""
    return {key: report.get(key) for key in SUMMARY_FIELDS}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_mlflow_ui(args) -> int:
    from ctr.tracking import local_store

    root = local_store(args.workdir)
    if not (root / "mlflow.db").exists():
        print(f"ctr mlflow-ui: error: no MLflow store at {root}; run `make demo` first", file=sys.stderr)
        return 1
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts"]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    print(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    server = subprocess.Popen(command, env=env)
    # SIGTERM reaches only this process, so pass it on; otherwise the server outlives it.
    signal.signal(signal.SIGTERM, lambda signum, frame: server.send_signal(signum))
    try:
        return server.wait()
    except KeyboardInterrupt:
        # From a terminal the server got SIGINT too; from elsewhere only this process did.
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        raise
