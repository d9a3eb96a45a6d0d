"""Render the benchmark results JSON as the Markdown tables of BENCHMARKS.md."""

from __future__ import annotations

import json
from pathlib import Path


def _rate(result: dict, threads: str) -> str:
    timing = result.get("threads", {}).get(threads)
    return f"{timing['rows_per_second']:,.0f}" if timing else "–"


def _ratio(result: dict, threads: str) -> str:
    ratio = result.get("ratio_to_lightgbm", {}).get(threads)
    return f"{ratio:.2f}×" if ratio is not None else "–"


def _diff(value) -> str:
    if value is None:
        return "NaN"
    return "0" if value == 0 else f"{value:.1e}"


def _size(result: dict, model: dict) -> str:
    size = result.get("size_bytes", model["model_bytes"] if result is model["engines"].get("lightgbm") else None)
    return f"{size / 1e6:.1f} MB" if size else "–"


def speed_table(results: dict) -> str:
    lines = [
        ("| model | engine | rows/s, 1 core | rows/s, 2 cores | vs LightGBM, 1 core | vs LightGBM, 2 cores "
        "| cores for 1e9 rows/h | compile | artifact |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model in results["models"]:
        for engine, result in model["engines"].items():
            if result.get("status") != "ok":
                # The last stderr line carries the error itself.
                detail = str(result.get("detail", "")).split(" | ")[-1][:90]
                lines.append(f"| {model['model']} | {engine} | {result.get('status')} at "
                             f"{result.get('stage', 'compile')}: {detail} | | | | | | |")
                continue
            compile_seconds = result.get("compile_seconds")
            lines.append(
                f"| {model['model']} | {engine} | {_rate(result, '1')} | {_rate(result, '2')} "
                f"| {_ratio(result, '1')} | {_ratio(result, '2')} "
                f"| {result.get('cores_for_1e9_rows_per_hour', '–')} "
                f"| {f'{compile_seconds:.0f} s' if compile_seconds is not None else '–'} "
                f"| {_size(result, model)} |")
    return "\n".join(lines)


def parity_table(results: dict) -> str:
    kinds = ["ordinary", "missing", "threshold", "above", "below", "categorical", "scored_rows"]
    lines = ["| model | engine | " + " | ".join(kinds) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in kinds) + " |"]
    for model in results["models"]:
        for engine, result in model["engines"].items():
            if engine == "lightgbm" or result.get("status") != "ok":
                continue
            diffs = result.get("max_abs_diff_by_kind", {})
            cells = [_diff(diffs[kind]) if kind in diffs else "–" for kind in kinds]
            lines.append(f"| {model['model']} | {engine} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def startup_table(results: dict) -> str:
    startup = results.get("engine_startup")
    if not startup:
        return "Not measured: run `python -m bench.startup`."
    median = startup["median"]
    lines = [
        (f"Reference model bundle: {startup['bundle_bytes'] / 1e6:.1f} MB with the {startup['compiled']} "
        f"form and {startup['check_rows']} check rows; bake (check rows, compile and check in child "
        f"processes) {startup.get('bake_seconds', 0):.0f} s. Median of {len(startup['runs'])} fresh processes:"),
        "",
        ("| import | load_bundle (SHA-256 of every file) | load_engine (CPU check, load, parity check) "
        "| first prediction | total | engine |"),
        "| ---: | ---: | ---: | ---: | ---: | --- |",
        (f"| {median['import_seconds']:.2f} s | {median['load_bundle_seconds']:.2f} s "
        f"| {median['load_engine_seconds']:.2f} s | {median['first_prediction_seconds'] * 1000:.1f} ms "
        f"| {median['total_seconds']:.2f} s | {median['engine']} |"),
    ]
    return "\n".join(lines)


def end_to_end_table(results: dict) -> str:
    e2e = results.get("end_to_end")
    if not e2e:
        return "Not measured: run `python -m bench.e2e`."
    memory = e2e["in_memory"]
    lines = [
        (f"Model {e2e['model']}, partitions of {e2e['partition_rows']:,} rows "
         f"({e2e['partition_bytes'] / 1e6:.0f} MB of Parquet) on the local S3 server, one scoring "
         f"thread per worker. In memory on the same rows ({memory['compiled_1']['rows']:,} rows, median of "
         f"{memory['compiled_1']['repeats']} runs): {memory['compiled_1']['engine']} "
         f"{memory['compiled_1']['rows_per_second_per_core']:,.0f} rows/s per core in one process and "
         f"{memory['compiled_2']['rows_per_second_per_core']:,.0f} in each of two at once; LightGBM "
         f"{memory['lightgbm_1']['rows_per_second_per_core']:,.0f}."),
        "",
        "| scenario | partitions | rows | seconds | rows/s | rows/s per core | share of in-memory | × LightGBM | engine |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in e2e["scenarios"]:
        lines.append(
            f"| {entry['name']} | {entry['partitions']} | {entry['rows']:,} | {entry['seconds']:.1f} "
            f"| {entry['rows_per_second']:,.0f} | {entry['rows_per_second_per_core']:,.0f} "
            f"| {entry['share_of_in_memory']:.0%} | {entry['ratio_to_lightgbm']:.1f}× "
            f"| {', '.join(entry['engines'])} |")
    return "\n".join(lines)


def source_startup_table(results: dict) -> str:
    startup = (results.get("end_to_end") or {}).get("startup")
    if not startup:
        return "Not measured: run `python -m bench.e2e`."
    lines = [
        (f"`ctr compare` code, median of {len(startup['runs'])} runs; each source starts a fresh process "
         f"and scores a {startup['rows']:,}-row partition:"),
        "",
        "| source | start-up to first prediction | of which bundle load and engine | engine |",
        "| --- | ---: | ---: | --- |",
    ]
    for source, item in startup["median"].items():
        lines.append(f"| {source} | {item['startup_seconds']:.2f} s | {item['load_seconds']:.2f} s "
                     f"| {item['engine']} |")
    return "\n".join(lines)


def render(path: Path) -> str:
    results = json.loads(Path(path).read_text())
    machine = results["machine"]
    header = (f"Measured {results['measured_at']} with `{results['command']}` on "
              f"{machine['cpu_model']} ({machine['arch']}, {machine['cpus']} CPUs), Python "
              f"{machine['python']}, " + ", ".join(f"{name} {version}" for name, version
                                                     in machine["libraries"].items() if version) + ".")
    return "\n\n".join([header, "### Speed", speed_table(results),
                        "### Maximum absolute difference from LightGBM", parity_table(results),
                        "### Engine start-up from a baked bundle", startup_table(results),
                        "### End to end: workers scoring from the local S3 server", end_to_end_table(results),
                        "### Start-up to first prediction by model source", source_startup_table(results)])
