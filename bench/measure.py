"""Child process of the benchmark: compile or time one engine on one model.

Each engine runs in its own process so that one that crashes (a segfault in
compiled code) is recorded as crashed and the benchmark goes on. Results are
one JSON object on the last line of stdout.

    python -m bench.measure compile --engine onnx --model M --artifact A
    python -m bench.measure time --engine E --model M [--artifact A] --rows R.npy
        --check-rows C.parquet [--reference P.npy | --save-reference P.npy]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ENGINES = ("lightgbm", "lleaves", "tl2cgen", "onnx")
ONNX_OPSET = 15


class OnnxEngine:
    """ONNX Runtime on a model converted by onnxmltools, whose tree ensemble operator computes in float32."""

    name = "onnx"
    # The session takes row-major float32, so it converts whatever order it gets.
    input_order = "C"

    def __init__(self, artifact: Path, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(artifact), options,
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        outputs = self._session.run(["probabilities"], {self._input: matrix.astype(np.float32)})
        return np.asarray(outputs[0][:, 1], dtype=np.float64)


class LightGBMPredict:
    """``Booster.predict`` with a fixed thread count."""

    name = "lightgbm"
    input_order = "F"

    def __init__(self, model_file: Path, threads: int):
        import lightgbm

        self._booster = lightgbm.Booster(model_file=str(model_file))
        self._threads = threads

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self._booster.predict(matrix, num_threads=self._threads)


def compile_onnx(model_file: Path, artifact: Path) -> None:
    """Convert a LightGBM model to ONNX with onnxmltools (float32 input, no ZipMap)."""
    import lightgbm
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = lightgbm.Booster(model_file=str(model_file))
    onnx_model = onnxmltools.convert_lightgbm(
        booster, initial_types=[("features", FloatTensorType([None, booster.num_feature()]))],
        target_opset=ONNX_OPSET, zipmap=False)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(onnx_model.SerializeToString())


def load(engine: str, model_file: Path, artifact: Path | None, threads: int):
    """Load one engine the way the worker does (compiled engines through ``ctr_inference.engines``)."""
    if engine == "lightgbm":
        return LightGBMPredict(model_file, threads)
    if engine == "onnx":
        return OnnxEngine(artifact, threads)
    from ctr_inference.engines import COMPILED_ENGINES

    return COMPILED_ENGINES[engine](model_file, artifact, threads)


def time_engine(args) -> dict:
    from ctr_images.compile import _load_check_matrix
    from ctr_inference.check_rows import max_abs_diff_by_kind

    # Each engine gets the order it declares, because the worker's feature_matrix
    # builds the matrix in that order straight from the Arrow columns.
    rows = np.load(args.rows)
    check = _load_check_matrix(args.check_rows)
    result: dict = {"rows": int(rows.shape[0]), "threads": {}}

    for threads in args.threads:
        started = time.perf_counter()
        engine = load(args.engine, args.model, args.artifact, threads)
        load_seconds = time.perf_counter() - started
        order = getattr(engine, "input_order", "F")
        rows = np.asfortranarray(rows) if order == "F" else np.ascontiguousarray(rows)
        result["input_order"] = order
        engine.predict(rows[: min(10_000, rows.shape[0])])
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            predictions = engine.predict(rows)
            timings.append(time.perf_counter() - started)
        result["threads"][str(threads)] = {
            "load_seconds": load_seconds,
            "seconds": timings,
            "rows_per_second": rows.shape[0] / float(np.median(timings)),
        }

    by_kind = max_abs_diff_by_kind(check, engine.predict(check.matrix), check.expected)
    if args.save_reference:
        np.save(args.save_reference, predictions)
    if args.reference:
        reference = np.load(args.reference)
        by_kind["scored_rows"] = float(np.max(np.abs(predictions - reference)))
    # JSON has no infinity: a NaN prediction is reported as None.
    result["max_abs_diff_by_kind"] = {kind: (value if np.isfinite(value) else None)
                                      for kind, value in by_kind.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measure")
    sub = parser.add_subparsers(dest="step", required=True)
    compile_parser = sub.add_parser("compile", help="convert a model to ONNX")
    compile_parser.add_argument("--engine", choices=["onnx"], required=True)
    compile_parser.add_argument("--model", type=Path, required=True)
    compile_parser.add_argument("--artifact", type=Path, required=True)
    time_parser = sub.add_parser("time", help="time one engine")
    time_parser.add_argument("--engine", choices=ENGINES, required=True)
    time_parser.add_argument("--model", type=Path, required=True)
    time_parser.add_argument("--artifact", type=Path)
    time_parser.add_argument("--rows", type=Path, required=True, help=".npy float64 matrix")
    time_parser.add_argument("--check-rows", type=Path, required=True)
    time_parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    time_parser.add_argument("--repeats", type=int, default=5)
    time_parser.add_argument("--reference", type=Path, help="LightGBM's predictions of --rows (.npy)")
    time_parser.add_argument("--save-reference", type=Path, help="write this engine's predictions (.npy)")
    args = parser.parse_args(argv)

    if args.step == "compile":
        started = time.perf_counter()
        compile_onnx(args.model, args.artifact)
        result = {"seconds": time.perf_counter() - started}
    else:
        result = time_engine(args)
    print(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
