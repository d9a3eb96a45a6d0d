"""``make train`` puts missing raw logs in place from a local copy, checked against the hash ``dvc add`` wrote."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctr.raw_logs import (
    RawLogsError,
    dataset_dvc_file,
    directory_md5,
    main,
    place_raw_logs,
    read_dvc_file,
)
from tests.conftest import REPO_ROOT

DVC = Path(sys.executable).parent / "dvc"


def write_logs(path: Path, lines: int, seed: int = 0) -> Path:
    with gzip.open(path, "wt") as handle:
        for number in range(lines):
            handle.write(f"{(number + seed) % 2}\t{number}\t{'a' * (number % 5)}\n")
    return path


def dvc_add(repo: Path, target: str) -> Path:
    subprocess.run([str(DVC), "add", target], cwd=repo, check=True, capture_output=True, timeout=120)
    return repo / f"{target}.dvc"


@pytest.fixture
def repo(tmp_path) -> Path:
    """A DVC project without git, with logs recorded by `dvc add` as a folder and as a file, then deleted."""
    repo = tmp_path / "repo"
    (repo / "data" / "raw" / "logs").mkdir(parents=True)
    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=repo, check=True, timeout=120)
    write_logs(repo / "data" / "raw" / "logs" / "day.tsv.gz", 500)
    write_logs(repo / "data" / "raw" / "single.tsv.gz", 300, seed=1)
    dvc_add(repo, "data/raw/logs")
    dvc_add(repo, "data/raw/single.tsv.gz")
    shutil.copyfile(repo / "data" / "raw" / "logs" / "day.tsv.gz", tmp_path / "day.tsv.gz")
    shutil.copyfile(repo / "data" / "raw" / "single.tsv.gz", tmp_path / "single.tsv.gz")
    shutil.rmtree(repo / "data" / "raw" / "logs")
    (repo / "data" / "raw" / "single.tsv.gz").unlink()
    return repo


def test_folder_output_restored(repo):
    sample = repo.parent / "day.tsv.gz"

    assert place_raw_logs(repo / "data" / "raw" / "logs.dvc", sample)

    restored = repo / "data" / "raw" / "logs" / "day.tsv.gz"
    assert restored.read_bytes() == sample.read_bytes()
    status = subprocess.run([str(DVC), "status", "data/raw/logs.dvc"], cwd=repo, capture_output=True,
                            text=True, timeout=120, check=True)
    assert "changed" not in status.stdout
    assert not list((repo / "data" / "raw").glob(".*.partial"))


def test_file_output_restored(repo):
    assert place_raw_logs(repo / "data" / "raw" / "single.tsv.gz.dvc", repo.parent / "single.tsv.gz")

    assert (repo / "data" / "raw" / "single.tsv.gz").is_file()


def test_present_logs_left_alone(repo):
    dvc_file = repo / "data" / "raw" / "logs.dvc"
    place_raw_logs(dvc_file, repo.parent / "day.tsv.gz")

    assert not place_raw_logs(dvc_file, repo.parent / "absent.tsv.gz")


def test_other_content_rejected(repo, tmp_path):
    (tmp_path / "other").mkdir()
    other = write_logs(tmp_path / "other" / "day.tsv.gz", 10)

    with pytest.raises(RawLogsError, match=r"does not match .*logs\.dvc.*dvc pull"):
        place_raw_logs(repo / "data" / "raw" / "logs.dvc", other)
    assert not (repo / "data" / "raw" / "logs").exists()
    assert not list((repo / "data" / "raw").glob(".*.partial"))


def test_other_file_name_rejected(repo, tmp_path):
    # The folder hash covers the file names, so the right bytes under another name do not match.
    renamed = tmp_path / "renamed.tsv.gz"
    shutil.copyfile(repo.parent / "day.tsv.gz", renamed)

    with pytest.raises(RawLogsError, match="does not match"):
        place_raw_logs(repo / "data" / "raw" / "logs.dvc", renamed)


def test_missing_sample_says_dvc_pull(repo):
    with pytest.raises(RawLogsError, match=r"are missing and .*absent\.tsv\.gz does not exist.*dvc pull"):
        place_raw_logs(repo / "data" / "raw" / "logs.dvc", repo.parent / "absent.tsv.gz")


def test_main_fails_with_one_line(repo, capsys, monkeypatch):
    monkeypatch.chdir(repo)
    (repo / "params.yaml").write_text("dataset: logs\n")

    assert dataset_dvc_file(repo) == repo / "data" / "raw" / "logs.dvc"
    assert main(["--sample", "absent.tsv.gz"]) == 1
    assert capsys.readouterr().err.startswith("ctr.raw_logs: error: raw logs ")
    assert main(["--sample", str(repo.parent / "day.tsv.gz")]) == 0


def test_criteo_sample_matches_committed_dvc_file(criteo_sample, tmp_path):
    output = read_dvc_file(REPO_ROOT / "data" / "raw" / "criteo.dvc")
    folder = tmp_path / "criteo"
    folder.mkdir()
    shutil.copyfile(criteo_sample, folder / criteo_sample.name)

    assert output.is_directory
    assert directory_md5(folder) == output.md5
