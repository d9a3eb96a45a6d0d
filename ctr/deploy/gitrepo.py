"""The git commands behind promotions and rollbacks, run with ``git`` itself."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ctr.deploy.errors import DirtyWorkingTreeError, GitError

logger = logging.getLogger(__name__)

# Separators for `git log --format`: unit and record separators never occur
# in commit metadata.
_UNIT = "\x1f"
_RECORD = "\x1e"


@dataclass(frozen=True)
class Commit:
    """One commit as the deploy commands see it."""

    sha: str
    committed_at: str  # ISO 8601 with offset
    subject: str
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def short_sha(self) -> str:
        return self.sha[:10]


class GitRepository:
    """A git working tree, addressed by any path inside it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.root = Path(self.run("rev-parse", "--show-toplevel"))

    def run(self, *args: str, check: bool = True, input_text: str | None = None,
            strip: bool = True) -> str:
        """Run ``git ARGS`` in the working tree and return its standard output.

        The output is stripped of surrounding whitespace unless ``strip`` is
        false. (Python counts the ASCII separators that ``log`` uses as
        whitespace.)

        Raises:
            GitError: git exited with an error and ``check`` is true.
        """
        try:
            completed = subprocess.run(
                ["git", *args], cwd=self.path, input=input_text, capture_output=True, text=True,
                check=False,
            )
        except FileNotFoundError as error:
            raise GitError("git is not installed or not on PATH") from error
        if check and completed.returncode != 0:
            detail = (completed.stderr or completed.stdout).strip()
            raise GitError(f"git {' '.join(args)} failed in {self.path}: {detail}")
        return completed.stdout.strip() if strip else completed.stdout

    def head(self) -> str:
        return self.run("rev-parse", "HEAD")

    def branch(self) -> str:
        """Return the checked-out branch, or raise on a detached HEAD."""
        name = self.run("rev-parse", "--abbrev-ref", "HEAD")
        if name == "HEAD":
            raise GitError(f"{self.root} has a detached HEAD; check out a branch to deploy from")
        return name

    def resolve(self, revision: str) -> str:
        """Return the full SHA of ``revision``.

        Raises:
            GitError: the revision does not name a commit.
        """
        sha = self.run("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", check=False)
        if not sha:
            raise GitError(f"{revision!r} does not name a commit in {self.root}")
        return sha

    def require_clean(self) -> None:
        """Raise unless tracked files are unchanged (untracked files are ignored).

        Raises:
            DirtyWorkingTreeError: a tracked file is modified, staged or deleted.
        """
        lines = self.run("status", "--porcelain", "--untracked-files=no", strip=False).splitlines()
        if lines:
            files = ", ".join(line[3:] for line in lines[:5])
            more = " …" if len(lines) > 5 else ""
            raise DirtyWorkingTreeError(
                f"the working tree of {self.root} has uncommitted changes ({files}{more}); "
                "commit or stash them first, so the deploy commit contains only the deploy"
            )

    def show_file(self, revision: str, path: Path) -> str | None:
        """Return a file's content at ``revision``, or None when it did not exist there."""
        relative = Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        completed = subprocess.run(["git", "show", f"{revision}:{relative}"], cwd=self.root,
                                   capture_output=True, text=True, check=False)
        return completed.stdout if completed.returncode == 0 else None

    def log(self, *paths: Path, revision: str = "HEAD", max_count: int = 0) -> list[Commit]:
        """Return the commits that touched ``paths``, newest first, with their trailers."""
        fmt = _UNIT.join(["%H", "%cI", "%s", "%(trailers:only,unfold)"]) + _RECORD
        args = ["log", f"--format={fmt}"]
        if max_count:
            args.append(f"--max-count={max_count}")
        args.append(revision)
        if paths:
            args.append("--")
            args.extend(str(Path(p).resolve()) for p in paths)
        output = self.run(*args, strip=False)
        commits = []
        for record in output.split(_RECORD):
            record = record.lstrip("\n")
            if not record:
                continue
            sha, committed_at, subject, trailer_text = record.split(_UNIT, 3)
            commits.append(Commit(sha, committed_at, subject, parse_trailers(trailer_text)))
        return commits

    def commit_file(self, path: Path, message: str) -> str:
        """Stage and commit one file with ``message``; return the new commit's SHA."""
        self.run("add", "--", str(path))
        self.run("commit", "--quiet", "--file=-", "--", str(path), input_text=message)
        return self.head()

    def revert(self, sha: str, message: str) -> str:
        """Revert ``sha`` as one commit with ``message``; return the new commit's SHA.

        Raises:
            GitError: the revert conflicts with later commits (the tree is restored first).
        """
        completed = subprocess.run(["git", "revert", "--no-commit", sha], cwd=self.root,
                                   capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            self.run("revert", "--abort", check=False)
            detail = (completed.stderr or completed.stdout).strip()
            raise GitError(f"git revert {sha[:10]} failed, so nothing was changed: {detail}. "
                           "Later commits changed the same lines; roll those back first")
        self.run("commit", "--quiet", "--file=-", input_text=message)
        return self.head()

    def push(self, remote: str, branch: str, attempts: int = 3) -> None:
        """Push the branch, rebasing onto the remote and retrying when another push won the race.

        Raises:
            GitError: every attempt was rejected, or the rebase conflicted.
        """
        for attempt in range(1, attempts + 1):
            completed = subprocess.run(["git", "push", remote, f"HEAD:{branch}"], cwd=self.root,
                                       capture_output=True, text=True, check=False)
            if completed.returncode == 0:
                logger.info("pushed %s to %s/%s", self.head()[:10], remote, branch)
                return
            reason = (completed.stderr.strip().splitlines() or ["no message"])[-1]
            logger.warning("push to %s/%s rejected (attempt %d of %d): %s", remote, branch, attempt,
                           attempts, reason)
            if attempt == attempts:
                break
            rebase = subprocess.run(["git", "pull", "--rebase", remote, branch], cwd=self.root,
                                    capture_output=True, text=True, check=False)
            if rebase.returncode != 0:
                self.run("rebase", "--abort", check=False)
                raise GitError(f"rebasing onto {remote}/{branch} failed: {rebase.stderr.strip()}")
        raise GitError(f"git push to {remote}/{branch} was rejected {attempts} times")


def parse_trailers(text: str) -> dict[str, str]:
    """Parse ``Key: value`` trailer lines; a repeated key keeps its last value."""
    trailers = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator and key.strip() and " " not in key.strip():
            trailers[key.strip()] = value.strip()
    return trailers
