"""The bake's compiled form: lleaves in the bundle, the content-keyed cache, and ``--no-compile``.

The model is the session's tiny registered model (8 trees), which lleaves
compiles in a few seconds. Each test that must see a compile or a cache hit
points ``CTR_CACHE_DIR`` at a folder of its own.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from ctr_images.bake import COMPILE_REPORT_FILE, write_bundle
from ctr_images.compile import DEFAULT_TARGET, MEASURED_CANDIDATE_FIELDS, MEASURED_FIELDS
from ctr_images.compiled_cache import CACHE_FOLDER, ENTRY_FILE
from ctr_inference.bundle import load_bundle, sha256_file
from ctr_inference.check_rows import CHECK_ROWS_FILE
from ctr_inference.engines import LightGBMEngine, load_engine

from ctr.cli import main as ctr_main
from ctr.commands.images import DEFAULT_COMPILE_TARGET

pytestmark = pytest.mark.integration

ARTIFACT = "compiled/model.lleaves.o"


def bake_bundle(registered_model, folder: Path, cache: Path, **options) -> tuple[Path, dict]:
    """Write the registered model's bundle into ``folder/bundle`` with the compiled-model cache in ``cache``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTR_CACHE_DIR", str(cache))
        write_bundle(registered_model.name, registered_model.version, folder / "bundle", **options)
    report = folder / COMPILE_REPORT_FILE
    return folder / "bundle", json.loads(report.read_text()) if report.is_file() else {}


def cache_entries(cache: Path) -> list[Path]:
    return sorted(path for path in (cache / CACHE_FOLDER).iterdir() if path.is_dir())


@pytest.fixture(scope="module")
def first_bake(registered_model, tmp_path_factory):
    """The first bake with an empty cache: (bundle folder, compile report, cache folder)."""
    cache = tmp_path_factory.mktemp("compiled-cache")
    bundle_dir, report = bake_bundle(registered_model, tmp_path_factory.mktemp("first-bake"), cache)
    return bundle_dir, report, cache


def test_bundle_has_lleaves_form(first_bake):
    bundle_dir, _, _ = first_bake
    metadata = json.loads((bundle_dir / "bundle.json").read_text())
    compiled = metadata["compiled"]

    assert compiled["engine"] == "lleaves"
    assert compiled["file"] == ARTIFACT
    assert compiled["target"]["cpu"] == DEFAULT_TARGET
    assert metadata["files"][ARTIFACT] == compiled["sha256"]
    assert metadata["files"][ARTIFACT] == sha256_file(bundle_dir / ARTIFACT)
    assert metadata["files"][CHECK_ROWS_FILE] == compiled["check_rows"]["sha256"]
    assert sorted(path.name for path in (bundle_dir / "compiled").iterdir()) == ["model.lleaves.o"]


def test_bundle_json_has_no_measurements(first_bake):
    bundle_dir, _, _ = first_bake
    compiled = json.loads((bundle_dir / "bundle.json").read_text())["compiled"]

    for field in MEASURED_FIELDS:
        assert field not in compiled, field
    for candidate in compiled["candidates"]:
        for field in MEASURED_CANDIDATE_FIELDS:
            assert field not in candidate, (candidate["engine"], field)


def test_report_beside_bundle_has_measurements(first_bake):
    _, report, cache = first_bake

    assert report["engine"] == "lleaves"
    assert report["cache"]["hit"] is False
    assert Path(report["cache"]["entry"]).parent == cache / CACHE_FOLDER
    assert report["rows_per_second_per_core"]["lleaves"] > 0
    assert report["rows_per_second_per_core"]["lightgbm"] > 0
    assert report["candidates"][0]["compile_seconds"] > 0


def test_worker_loads_lleaves(first_bake, caplog):
    bundle_dir, _, _ = first_bake
    caplog.set_level(logging.INFO, logger="ctr_inference.engines")

    engine = load_engine(load_bundle(bundle_dir), threads=1)

    assert engine.name == "lleaves"
    assert "scoring engine lleaves" in caplog.text


def test_rebake_reuses_cache(first_bake, registered_model, tmp_path, caplog):
    first_dir, _, cache = first_bake
    [entry] = cache_entries(cache)
    artifact_mtime = (entry / ARTIFACT).stat().st_mtime_ns
    caplog.set_level(logging.INFO)

    bundle_dir, report = bake_bundle(registered_model, tmp_path, cache)

    assert report["cache"]["hit"] is True
    assert report["cache"]["entry"] == str(entry)
    # compile_bundle logs every candidate it compiles; a cache hit runs none.
    assert not [record for record in caplog.records if record.name == "ctr_images.compile"]
    assert "reused the compiled form (lleaves" in caplog.text
    assert (entry / ARTIFACT).stat().st_mtime_ns == artifact_mtime
    assert cache_entries(cache) == [entry]
    assert (bundle_dir / "bundle.json").read_bytes() == (first_dir / "bundle.json").read_bytes()
    assert load_bundle(bundle_dir).digest == load_bundle(first_dir).digest


def test_rebake_without_cache_is_identical(first_bake, registered_model, tmp_path, caplog):
    first_dir, _, _ = first_bake
    caplog.set_level(logging.INFO, logger="ctr_images.compile")

    bundle_dir, report = bake_bundle(registered_model, tmp_path / "bake", tmp_path / "empty-cache")

    assert report["cache"]["hit"] is False
    assert "candidate lleaves: ok" in caplog.text
    for name in ("bundle.json", CHECK_ROWS_FILE, ARTIFACT):
        assert (bundle_dir / name).read_bytes() == (first_dir / name).read_bytes(), name


def test_damaged_cache_entry_is_compiled_again(first_bake, registered_model, tmp_path, caplog):
    first_dir, _, cache = first_bake
    damaged = tmp_path / "damaged-cache"
    shutil.copytree(cache, damaged)
    [entry] = cache_entries(damaged)
    (entry / ARTIFACT).write_bytes(b"not an object file")
    caplog.set_level(logging.INFO)

    bundle_dir, report = bake_bundle(registered_model, tmp_path / "bake", damaged)

    assert report["cache"]["hit"] is False
    assert "removing it and compiling again" in caplog.text
    assert (bundle_dir / "bundle.json").read_bytes() == (first_dir / "bundle.json").read_bytes()
    # The compile replaced the damaged entry.
    assert (entry / ENTRY_FILE).is_file()
    assert sha256_file(entry / ARTIFACT) == sha256_file(first_dir / ARTIFACT)


def test_other_target_is_another_entry(first_bake, registered_model, tmp_path):
    _, _, cache = first_bake
    private = tmp_path / "cache"
    shutil.copytree(cache, private)

    bundle_dir, report = bake_bundle(registered_model, tmp_path / "bake", private, compile_target="x86-64-v2")
    compiled = load_bundle(bundle_dir).metadata["compiled"]

    assert report["cache"]["hit"] is False
    assert len(cache_entries(private)) == 2
    assert compiled["target"]["cpu"] == "x86-64-v2"
    assert "avx2" not in compiled["target"]["required_flags"]


def test_no_compile_scores_with_lightgbm(registered_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CTR_CACHE_DIR", str(tmp_path / "cache"))
    workdir = tmp_path / "bundles"

    code = ctr_main(["image", "bake", registered_model.name, registered_model.version, "--no-compile",
                     "--workdir", str(workdir), "--layout", str(tmp_path / "layout"), "--base", "scratch"])

    assert code == 0
    assert capsys.readouterr().out.strip().endswith("compiled none")
    bundle_dir = workdir / f"{registered_model.name}-v{registered_model.version}" / "bundle"
    bundle = load_bundle(bundle_dir)
    assert "compiled" not in bundle.metadata
    assert sorted(bundle.metadata["files"]) == ["encoding.parquet", "model.lgb"]
    assert not (bundle_dir.parent / COMPILE_REPORT_FILE).exists()
    assert not (tmp_path / "cache" / CACHE_FOLDER).exists()
    engine = load_engine(bundle, threads=1)
    assert isinstance(engine, LightGBMEngine)
    assert engine.fallback_reason == "the bundle has no compiled form"


def test_cli_default_target_is_compile_default():
    assert DEFAULT_COMPILE_TARGET == DEFAULT_TARGET
