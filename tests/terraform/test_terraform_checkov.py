"""checkov over terraform/: no failed check, and every suppression sits on its
resource with a written reason."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from tf_support import TERRAFORM_DIR

# A reason shorter than this is a placeholder ("ok", "n/a"), not a reason.
MIN_REASON_LENGTH = 25
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")

# Fewer passed checks than this means checkov did not read the modules.
MIN_PASSED_CHECKS = 200


@pytest.fixture(scope="module")
def checkov_report(checkov_bin, tmp_path_factory) -> dict:
    environment = dict(os.environ)
    # Offline: no policy metadata download, no PyPI version check.
    environment.update(
        BC_SKIP_MAPPING="TRUE", CKV_SKIP_PACKAGE_UPDATE_CHECK="true", LOG_LEVEL="ERROR"
    )
    output_dir = tmp_path_factory.mktemp("checkov")
    command = [
        str(checkov_bin),
        "--directory",
        str(TERRAFORM_DIR),
        "--framework",
        "terraform",
        "--skip-download",
        "--compact",
        "--output",
        "json",
        "--output-file-path",
        str(output_dir),
    ]

    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=600, check=False
    )

    report_file = output_dir / "results_json.json"
    assert report_file.exists(), (
        f"checkov wrote no report (exit {result.returncode}):\n{result.stderr[-4000:]}"
    )
    report = json.loads(report_file.read_text())
    # With one framework checkov writes one report object; with several, a list.
    return report[0] if isinstance(report, list) else report


def test_checkov_scanned_modules(checkov_report):
    passed = checkov_report["summary"]["passed"]

    assert passed >= MIN_PASSED_CHECKS, (
        f"checkov passed only {passed} checks: did it read terraform/?"
    )


def test_checkov_has_no_failed_check(checkov_report):
    failures = [
        f"{check['check_id']} {check['check_name']}: {check['resource']} ({check['file_path']})"
        for check in checkov_report["results"]["failed_checks"]
    ]

    assert not failures, "checkov failed checks:\n" + "\n".join(failures)


def test_checkov_skips_carry_reasons(checkov_report):
    unexplained = [
        f"{check['check_id']} on {check['resource']} ({check['file_path']})"
        for check in checkov_report["results"]["skipped_checks"]
        if len((check.get("check_result", {}).get("suppress_comment") or "").strip())
        < MIN_REASON_LENGTH
    ]

    assert not unexplained, "checkov suppressions without a reason:\n" + "\n".join(unexplained)


def test_skip_comments_sit_inside_their_block():
    misplaced = []
    for tf_file in sorted(TERRAFORM_DIR.rglob("*.tf")):
        lines = tf_file.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            match = SKIP_COMMENT.search(line)
            if match is None:
                continue

            reason = (match.group(2) or "").strip()
            if len(reason) < MIN_REASON_LENGTH:
                misplaced.append(
                    f"{tf_file.relative_to(TERRAFORM_DIR)}:{number}: {match.group(1)} has no reason"
                )

            # checkov reads a skip inside the block it applies to, so the
            # nearest line above that is not another comment opens the block.
            above = next(
                (
                    lines[index]
                    for index in range(number - 2, -1, -1)
                    if not lines[index].lstrip().startswith("#")
                ),
                "",
            )
            if not re.match(r'^\s*(resource|data|module)\s+"', above):
                misplaced.append(
                    f"{tf_file.relative_to(TERRAFORM_DIR)}:{number}: {match.group(1)} "
                    "is not at the top of a resource, data or module block"
                )

    assert not misplaced, "\n".join(misplaced)
