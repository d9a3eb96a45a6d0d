"""``python -m bench``: train, compile and time the benchmark models; ``--report`` prints Markdown."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bench import report, runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true",
                        help="also measure the large 1000-tree, 255-leaf models (slow on 2 cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine and thread count")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="measure only this model (repeatable)")
    parser.add_argument("--engine", action="append", dest="engines", metavar="NAME",
                        choices=runner.ENGINES, help="measure only this engine (repeatable)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/bench"),
                        help="trained models and compiled artifacts (default: .cache/bench)")
    parser.add_argument("--output", type=Path, default=runner.DEFAULT_RESULTS,
                        help="results JSON (default: bench/results.json)")
    parser.add_argument("--report", action="store_true", help="print the results as Markdown and exit")
    args = parser.parse_args(argv)

    if args.report:
        print(report.render(args.output))
        return 0
    if args.repeats < 5:
        parser.error("--repeats must be at least 5: the benchmark reports the median of 5 or more runs")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engines = tuple(args.engines) if args.engines else runner.ENGINES
    if "lightgbm" not in engines:
        engines = ("lightgbm", *engines)
    runner.run(full=args.full, repeats=args.repeats, cache_dir=args.cache_dir, output=args.output,
               engines=engines, only=args.models)
    print(report.render(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
