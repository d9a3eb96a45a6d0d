"""The ``ctr`` command line: thin wrappers over the library functions.

Each area registers its subcommands from its own module in ``ctr.commands``,
so adding a command never means editing a long central file. Heavy imports
(Spark, MLflow, LightGBM) happen inside the command functions, so ``ctr
--help`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Modules in ctr.commands; each defines register(subparsers).
COMMAND_MODULES = (
    "demo",
    "pipeline",
    "scoring",
    "images",
    "deploy",
    "plan",
)

logger = logging.getLogger("ctr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctr", description="CTR prediction platform")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"ctr.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one command and turn platform errors into a message and exit code 1."""
    from ctr_inference.errors import CtrError

    parser = build_parser()
    args = parser.parse_args(argv)
    # MLflow's per-file download bars would bury the command's own progress output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.handler(args) or 0)
    except CtrError as error:
        print(f"ctr {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ctr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
