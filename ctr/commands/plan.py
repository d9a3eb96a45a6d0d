"""``ctr plan``: pods, partition size, KEDA setting, nodes and cost for a daily batch."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    from ctr.plan import DEFAULT_RESULTS, Assumptions

    defaults = Assumptions()
    parser = subparsers.add_parser(
        "plan", help="size pods, partitions and nodes to score a batch within a deadline",
        description="Print the capacity plan for scoring ROWS rows within DEADLINE, from the "
                    "latest benchmark results or a bundle's measured speed, with its assumptions.")
    parser.add_argument("--rows", type=float, default=1e9, help="rows per batch (default: 1e9)")
    parser.add_argument("--deadline", default="1h", help="time to score the batch, like 1h or 45m (default: 1h)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="benchmark results JSON (default: bench/results.json)")
    source.add_argument("--model", type=Path, metavar="BUNDLE",
                        help="bundle directory whose bake measured the scoring speed (read from "
                             "compile-report.json beside it)")
    parser.add_argument("--bench-model", help="model of the benchmark results (default: the reference model)")
    parser.add_argument("--pod-cpus", type=int, default=defaults.pod_cpus,
                        help=f"CPU limit and scoring threads per pod (default: {defaults.pod_cpus})")
    parser.add_argument("--pod-cpu-request", type=float, default=defaults.pod_cpu_request,
                        help=f"CPU request per pod (default: {defaults.pod_cpu_request})")
    parser.add_argument("--pod-memory-gib", type=float, default=defaults.pod_memory_gib,
                        help=f"memory request per pod in GiB (default: {defaults.pod_memory_gib})")
    parser.add_argument("--node-start-seconds", type=float, default=defaults.node_start_seconds,
                        help=f"time from scale-up to a ready node (default: {defaults.node_start_seconds:.0f})")
    parser.add_argument("--image-pull-seconds", type=float, default=defaults.image_pull_seconds,
                        help=f"image pull time on a new node (default: {defaults.image_pull_seconds:.0f})")
    parser.add_argument("--worker-start-seconds", type=float, default=defaults.worker_start_seconds,
                        help="worker start to first prediction, as `ctr compare` measures it "
                             f"(default: {defaults.worker_start_seconds:.0f})")
    parser.add_argument("--efficiency", type=float,
                        help="end-to-end rows/s as a fraction of in-memory rows/s (default: measured by "
                             f"the end-to-end benchmark, else {defaults.end_to_end_efficiency})")
    parser.add_argument("--parallel-efficiency", type=float,
                        help="rows/s on all pod threads divided by threads times the 1-thread rate "
                             "(default: measured by the benchmark, 0.9 for --model)")
    parser.add_argument("--headroom", type=float, default=defaults.headroom,
                        help=f"fraction of the deadline kept spare (default: {defaults.headroom})")
    parser.add_argument("--partition-seconds", type=float, default=defaults.partition_seconds,
                        help="target time to score one partition; must stay under the 120 s spot "
                             f"notice (default: {defaults.partition_seconds:.0f})")
    parser.add_argument("--bytes-per-row", type=float, default=defaults.bytes_per_row,
                        help=f"Parquet bytes per feature row (default: {defaults.bytes_per_row:.0f})")
    parser.add_argument("--max-partition-mb", type=float, default=defaults.max_partition_megabytes,
                        help=f"largest partition in MB (default: {defaults.max_partition_megabytes:.0f})")
    parser.add_argument("--price", action="append", default=[], metavar="TYPE=USD",
                        help="hourly price of an instance type, like c6i.2xlarge=0.34 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(handler=run_plan)


def run_plan(args) -> int:
    from ctr.plan import (
        Assumptions,
        PlanError,
        make_plan,
        override_prices,
        parse_duration,
        render,
        speed_from_bundle,
        speed_from_results,
    )

    if args.model:
        speed = speed_from_bundle(args.model)
    else:
        speed = speed_from_results(args.results, args.bench_model)
    # An explicit --efficiency wins, then the benchmark's measurement, then the default.
    efficiency = args.efficiency
    if efficiency is None:
        efficiency = speed.end_to_end_efficiency
    if efficiency is None:
        efficiency = Assumptions.end_to_end_efficiency

    assumptions = Assumptions(
        node_start_seconds=args.node_start_seconds,
        image_pull_seconds=args.image_pull_seconds,
        worker_start_seconds=args.worker_start_seconds,
        end_to_end_efficiency=efficiency,
        headroom=args.headroom,
        partition_seconds=args.partition_seconds,
        pod_cpus=args.pod_cpus,
        pod_cpu_request=args.pod_cpu_request,
        pod_memory_gib=args.pod_memory_gib,
        bytes_per_row=args.bytes_per_row,
        max_partition_megabytes=args.max_partition_mb,
    )
    if args.parallel_efficiency is not None:
        if not 0 < args.parallel_efficiency <= 1:
            raise PlanError(f"--parallel-efficiency must be in (0, 1], got {args.parallel_efficiency}")
        speed.parallel_efficiency = args.parallel_efficiency
    plan = make_plan(args.rows, parse_duration(args.deadline), speed, assumptions,
                     override_prices(args.price))
    print(json.dumps(plan.to_dict(), indent=2) if args.json else render(plan))
    return 0
