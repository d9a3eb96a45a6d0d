"""Compare two model sources (baked and S3) on the same partitions.

Each source runs in a fresh Python process, as a new pod would: imports, bundle
load (for S3: download into an empty cache, then checksum verification) and
scoring. The report gives each source's start-up time to first prediction,
measured from process start to the moment the first partition's predictions
exist, and the maximum absolute difference between the two sources'
predictions, joined by ``row_id``. The same bundle from both sources must
give a difference of exactly 0.

The child side runs as ``python -m ctr_inference.compare --source ...``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ctr_inference.errors import CtrError


def compare_sources(baked_path: str, bundle_uri: str, partitions: list[str], workdir: Path,
                    threads: int = 1, timeout: float = 600.0) -> dict:
    """Score ``partitions`` with the baked bundle and with the S3 bundle, and compare.

    Raises:
        CtrError: no partitions, a source failed to load or score, or the two runs scored different rows.
    """
    import numpy as np
    import pyarrow.parquet as pq

    if not partitions:
        raise CtrError("no partitions to compare")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results, tables = {}, {}
    for source, location in (("baked", baked_path), ("s3", bundle_uri)):
        cache = workdir / f"cache-{source}-{os.getpid()}-{time.monotonic_ns()}"
        output = workdir / f"predictions-{source}.parquet"
        command = [sys.executable, "-m", "ctr_inference.compare", "--source", source, "--location", location,
                   "--cache-dir", str(cache), "--output", str(output), "--threads", str(threads), *partitions]
        spawned = time.time()
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if completed.returncode != 0:
            tail = completed.stderr.strip().splitlines()[-3:]
            raise CtrError(f"scoring with the {source} source failed (exit {completed.returncode}): "
                           + " | ".join(tail))
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        result["startup_seconds"] = round(result.pop("first_prediction_at") - spawned, 3)
        results[source] = result
        tables[source] = pq.read_table(output).sort_by("row_id")

    baked, s3 = tables["baked"], tables["s3"]
    baked_ids, s3_ids = baked.column("row_id").to_numpy(), s3.column("row_id").to_numpy()
    if not np.array_equal(baked_ids, s3_ids):
        raise CtrError(f"the sources scored different rows: {len(baked_ids)} baked, {len(s3_ids)} from S3")
    difference = np.abs(baked.column("ctr").to_numpy() - s3.column("ctr").to_numpy())
    return {
        "partitions": len(partitions),
        "rows": int(baked.num_rows),
        "max_abs_difference": float(difference.max()) if len(difference) else 0.0,
        "same_bundle": results["baked"]["bundle_digest"] == results["s3"]["bundle_digest"],
        "sources": results,
    }


def _score_partitions(source: str, location: str, cache_dir: str, output: str, threads: int,
                      partitions: list[str]) -> dict:
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ctr_inference.messages import split_s3_uri
    from ctr_inference.model_source import open_bundle
    from ctr_inference.scorer import Scorer

    imported = time.time()
    bundle = open_bundle(source, location, cache_dir)
    scorer = Scorer(bundle, threads=threads or None)
    loaded = time.time()

    s3 = boto3.client("s3")
    first_prediction_at = None
    tables = []
    for uri in partitions:
        bucket, key = split_s3_uri(uri)
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        predictions = scorer.score(table)
        if first_prediction_at is None:
            first_prediction_at = time.time()
        tables.append(predictions.select(["row_id", "ctr"]))
    pq.write_table(pa.concat_tables(tables), output)
    return {
        "source": source, "location": location, "model_version": bundle.model_version,
        "bundle_digest": bundle.digest, "engine": scorer.engine.name,
        "load_seconds": round(loaded - imported, 3),
        "first_prediction_at": first_prediction_at,
        "total_seconds_in_process": round(time.time() - imported, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Child process: load one source, score the partitions, print a JSON line of timings."""
    parser = argparse.ArgumentParser(prog="python -m ctr_inference.compare")
    parser.add_argument("--source", required=True, choices=("baked", "s3"))
    parser.add_argument("--location", required=True, help="bundle directory or s3:// prefix")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--output", required=True, help="Parquet file for row_id and ctr")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("partitions", nargs="+", help="s3:// URIs of feature partitions")
    args = parser.parse_args(argv)
    # The same start-up as a worker pod, so the times compare with a real scale-up.
    from ctr_inference.worker import skip_optional_imports

    skip_optional_imports()
    try:
        result = _score_partitions(args.source, args.location, args.cache_dir, args.output, args.threads,
                                   args.partitions)
    except CtrError as error:
        print(f"cannot score with the {args.source} source: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
