"""load_engine falls back to LightGBM, with a logged reason, whenever the compiled form is unusable."""

from __future__ import annotations

import copy
import json
import logging
import shutil

import numpy as np
import pytest
from ctr_inference.bundle import Bundle, load_bundle, write_metadata
from ctr_inference.check_rows import CHECK_ROWS_FILE, read_check_rows, write_check_rows
from ctr_inference.cpu import TARGET_FLAGS, CpuInfo, read_cpuinfo
from ctr_inference.engines import LightGBMEngine, load_engine

from tests.engines.conftest import FREQUENCY, new_model_dir, write_bundle

V3_CPU = CpuInfo(arch="x86_64", model_name="test CPU with x86-64-v3",
                 flags=frozenset(TARGET_FLAGS["x86-64-v3"]) | {"hypervisor"})
OLD_CPU = CpuInfo(arch="x86_64", model_name="Intel Xeon E5-2670 (Sandy Bridge)",
                  flags=frozenset(TARGET_FLAGS["x86-64-v2"]) | {"avx", "xsave"})
ARM_CPU = CpuInfo(arch="aarch64", model_name="", flags=frozenset({"fp", "asimd"}))


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory):
    from ctr_images.compile import compile_bundle

    from tests.engines.conftest import features_for

    directory = new_model_dir(tmp_path_factory.mktemp("fallback"), FREQUENCY)
    section = compile_bundle(directory, features_for(FREQUENCY), engines=("lleaves",))
    write_bundle(directory, FREQUENCY, section)
    return directory


@pytest.fixture
def bundle_copy(compiled_dir, tmp_path):
    """A private copy of the compiled bundle that a test may damage."""
    target = tmp_path / "bundle"
    shutil.copytree(compiled_dir, target)
    return target


def metadata_bundle(directory, change) -> Bundle:
    """The bundle of ``directory`` with its in-memory metadata changed by ``change``."""
    bundle = load_bundle(directory)
    metadata = copy.deepcopy(bundle.metadata)
    change(metadata["compiled"])
    return Bundle(path=bundle.path, metadata=metadata, features=bundle.features)


def test_compiled_on_matching_cpu(compiled_dir):
    engine = load_engine(load_bundle(compiled_dir), threads=1, cpu=V3_CPU)
    assert engine.name == "lleaves"


def test_compiled_on_this_machine(compiled_dir):
    engine = load_engine(load_bundle(compiled_dir), threads=1)
    if set(TARGET_FLAGS["x86-64-v3"]) <= read_cpuinfo().flags:
        assert engine.name == "lleaves"
    else:
        assert engine.name == "lightgbm"


def test_cpu_without_avx2_falls_back(compiled_dir, caplog):
    caplog.set_level(logging.WARNING, logger="ctr_inference.engines")
    engine = load_engine(load_bundle(compiled_dir), threads=1, cpu=OLD_CPU)
    assert isinstance(engine, LightGBMEngine)
    assert "avx2" in engine.fallback_reason
    assert "Sandy Bridge" in engine.fallback_reason
    assert any("avx2" in record.getMessage() for record in caplog.records)


def test_cpu_from_cpuinfo_file_falls_back(compiled_dir, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Old Xeon\nflags\t\t: fpu sse sse2 ssse3\n")
    engine = load_engine(load_bundle(compiled_dir), threads=1,
                         cpu=read_cpuinfo(cpuinfo, arch="x86_64"))
    assert engine.name == "lightgbm"
    assert "avx" in engine.fallback_reason


def test_other_architecture_falls_back(compiled_dir):
    engine = load_engine(load_bundle(compiled_dir), threads=1, cpu=ARM_CPU)
    assert engine.name == "lightgbm"
    assert "aarch64" in engine.fallback_reason


def test_checksum_mismatch_falls_back(compiled_dir):
    bundle = metadata_bundle(compiled_dir, lambda compiled: compiled.update(sha256="0" * 64))
    engine = load_engine(bundle, threads=1, cpu=V3_CPU)
    assert engine.name == "lightgbm"
    assert "SHA-256" in engine.fallback_reason


def test_missing_artifact_falls_back(bundle_copy):
    bundle = load_bundle(bundle_copy)
    (bundle_copy / bundle.metadata["compiled"]["file"]).unlink()
    engine = load_engine(bundle, threads=1, cpu=V3_CPU)
    assert engine.name == "lightgbm"
    assert "missing" in engine.fallback_reason


def test_unknown_engine_falls_back(compiled_dir):
    bundle = metadata_bundle(compiled_dir, lambda compiled: compiled.update(engine="quantum"))
    engine = load_engine(bundle, threads=1, cpu=V3_CPU)
    assert engine.name == "lightgbm"
    assert "quantum" in engine.fallback_reason


def test_no_compiled_form(bundle_copy):
    metadata = json.loads((bundle_copy / "bundle.json").read_text())
    shutil.rmtree(bundle_copy / "compiled")
    (bundle_copy / CHECK_ROWS_FILE).unlink()
    metadata.pop("compiled")
    metadata.pop("files")
    write_metadata(bundle_copy, metadata)
    engine = load_engine(load_bundle(bundle_copy), threads=1, cpu=V3_CPU)
    assert engine.name == "lightgbm"
    assert engine.fallback_reason == "the bundle has no compiled form"


def test_parity_failure_falls_back(bundle_copy):
    bundle = load_bundle(bundle_copy)
    rows = read_check_rows(bundle_copy / CHECK_ROWS_FILE, bundle.features)
    rows.expected = rows.expected + 1e-6
    write_check_rows(bundle_copy / CHECK_ROWS_FILE, rows, bundle.features)
    engine = load_engine(bundle, threads=1, cpu=V3_CPU)
    assert engine.name == "lightgbm"
    assert "differs from LightGBM" in engine.fallback_reason


def test_missing_check_rows_falls_back(bundle_copy):
    bundle = load_bundle(bundle_copy)
    (bundle_copy / CHECK_ROWS_FILE).unlink()
    engine = load_engine(bundle, threads=1, cpu=V3_CPU)
    assert engine.name == "lightgbm"
    assert "check rows" in engine.fallback_reason


def test_fallback_scores_like_lightgbm(compiled_dir):
    bundle = load_bundle(compiled_dir)
    fallback = load_engine(bundle, threads=1, cpu=OLD_CPU)
    compiled = load_engine(bundle, threads=1, cpu=V3_CPU)
    rows = read_check_rows(compiled_dir / CHECK_ROWS_FILE, bundle.features)
    np.testing.assert_array_equal(fallback.predict(rows.matrix), rows.expected)
    np.testing.assert_allclose(compiled.predict(rows.matrix), rows.expected, rtol=0, atol=1e-9)


def test_threads_default_to_cpu_quota(compiled_dir):
    from ctr_inference.cpu import cpu_quota

    engine = load_engine(load_bundle(compiled_dir), threads=0, cpu=V3_CPU)
    assert engine.threads == cpu_quota()
