"""``ctr deploy``: promote, history, rollback and status of model images per environment."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

STATUS_EPILOG = """exit codes:
  0  synced, healthy, and the Deployment runs the expected image
  1  error: the API is unreachable, the Application does not exist, ...
  3  degraded: the sync failed, Argo CD reports Degraded, or the rollout
     exceeded its progress deadline
  4  still progressing when the timeout expired
"""
ENV_HELP = "environment (a folder of gitops/overlays)"


def register(subparsers) -> None:
    deploy = subparsers.add_parser("deploy", help="promote, list, roll back and watch model images",
                                   description="Deploy history is git history: each promotion and "
                                   "rollback is one commit to gitops/overlays/ENV.")
    commands = deploy.add_subparsers(dest="deploy_command", required=True, metavar="DEPLOY_COMMAND")

    promote = commands.add_parser("promote", help="pin an image in an environment's overlay and commit it")
    promote.add_argument("environment", metavar="ENV", help=ENV_HELP)
    promote.add_argument("image", metavar="IMAGE_REF", nargs="?",
                         help="registry/repository:tag[@sha256:...]; the digest is looked up in "
                              "the registry when missing")
    promote.add_argument("--from", dest="source", metavar="ENV",
                         help="promote the image that environment ENV runs (instead of IMAGE_REF)")
    promote.add_argument("--model-name", default="", help="registered model name (default: from "
                         "the image's labels or tag)")
    promote.add_argument("--model-version", default="", help="model version (default: from the "
                         "image's labels or tag)")
    promote.add_argument("--run-id", default="", help="MLflow run id (default: from the image's "
                         "labels, or the MLflow registry at $MLFLOW_TRACKING_URI)")
    _add_repository_options(promote)
    _add_wait_options(promote)
    promote.set_defaults(handler=run_promote)

    history = commands.add_parser("history", help="list the promotions and rollbacks of an environment")
    history.add_argument("environment", metavar="ENV", help=ENV_HELP)
    history.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    history.add_argument("--repo", type=Path, default=Path("."), help="git working tree (default: .)")
    history.set_defaults(handler=run_history)

    rollback = commands.add_parser("rollback", help="revert the latest (or a named) promotion")
    rollback.add_argument("environment", metavar="ENV", help=ENV_HELP)
    rollback.add_argument("commit", nargs="?", default="",
                          help="promotion commit to revert (default: the latest one not yet reverted)")
    _add_repository_options(rollback)
    _add_wait_options(rollback)
    rollback.set_defaults(handler=run_rollback)

    status = commands.add_parser("status", help="read the rollout state from Argo CD and the Deployment",
                                 epilog=STATUS_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("environment", metavar="ENV", help=ENV_HELP)
    status.add_argument("--repo", type=Path, default=Path("."),
                        help="git working tree whose overlay names the expected image (default: .)")
    status.add_argument("--image", default="", help="expected image (default: the one the overlay pins)")
    status.add_argument("--revision", default="", help="git commit Argo CD must have synced (default: any)")
    _add_cluster_options(status)
    status.set_defaults(handler=run_status)


def _add_repository_options(parser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("."), help="git working tree (default: .)")
    parser.add_argument("--skip-image-check", action="store_true",
                        help="do not contact the image's registry: neither check that the image "
                             "exists nor add the promoted-<tag> tag that keeps it from expiring")
    parser.add_argument("--push", action="store_true",
                        help="push the commit to the remote branch (rebasing when another push won)")
    parser.add_argument("--remote", default="origin", help="remote for --push (default: origin)")


def _add_wait_options(parser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="after --push, wait for the rollout as `ctr deploy status` does")
    _add_cluster_options(parser)


def _add_cluster_options(parser) -> None:
    parser.add_argument("--kubeconfig", default="", help="kubeconfig file (default: $KUBECONFIG, "
                        "~/.kube/config, or the pod's service account)")
    parser.add_argument("--context", default="", help="kubeconfig context (default: the current one)")
    parser.add_argument("--eks-cluster", default="", help="read an EKS cluster with the current AWS "
                        "credentials instead of a kubeconfig")
    parser.add_argument("--region", default="", help="AWS region of --eks-cluster (default: from "
                        "the AWS configuration)")
    parser.add_argument("--application", default="", help="Argo CD Application (default: ctr-ENV)")
    parser.add_argument("--argocd-namespace", default="argocd", help="namespace of the Argo CD "
                        "Applications (default: argocd)")
    parser.add_argument("--namespace", default="ctr", help="namespace of the workers (default: ctr)")
    parser.add_argument("--deployment", default="ctr-worker", help="Deployment (default: ctr-worker)")
    parser.add_argument("--min-ready", type=int, default=0,
                        help="ready replicas required on the image (default: 0, since KEDA may "
                             "have scaled to zero)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="seconds to wait for a healthy rollout (default: 0, read once)")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="seconds between readings (default: 10)")


# Handlers ---------------------------------------------------------------------------


def run_promote(args) -> int:
    from ctr.deploy import promotions
    from ctr.deploy.errors import ImageReferenceError
    from ctr.deploy.gitrepo import GitRepository
    from ctr.deploy.images import parse_image_reference
    from ctr.deploy.registry import RegistryClient

    repo = GitRepository(args.repo)
    registry = RegistryClient()
    if bool(args.image) == bool(args.source):
        raise ImageReferenceError("give either IMAGE_REF or --from ENV")

    if args.source:
        release = promotions.current_release(repo, args.source)
        image = release.image
        recorded = promotions.facts_of_release(repo, args.source, release)
        facts = promotions.model_facts(image, args.model_name or recorded.name,
                                       args.model_version or recorded.version,
                                       args.run_id or recorded.run_id, registry=registry,
                                       tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""))
    else:
        image = parse_image_reference(args.image)
        if not image.digest:
            image = image.with_digest(registry.resolve_digest(image))
        facts = promotions.model_facts(image, args.model_name, args.model_version, args.run_id,
                                       registry=registry,
                                       tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""))

    sha = promotions.promote(repo, args.environment, image, facts, registry=registry,
                             verify_image=not args.skip_image_check)
    if sha is None:
        print(f"{args.environment} already runs {image}; nothing to commit")
        sha = repo.head()
    else:
        print(f"promoted {facts.name} v{facts.version} to {args.environment} in commit {sha[:10]}")
    return _publish_and_wait(args, repo, sha, str(image))


def run_rollback(args) -> int:
    from ctr.deploy import promotions
    from ctr.deploy.gitrepo import GitRepository

    repo = GitRepository(args.repo)
    sha, restored = promotions.rollback(repo, args.environment, args.commit,
                                        verify_image=not args.skip_image_check)
    print(f"rolled {args.environment} back to {restored.image} in commit {sha[:10]}")
    return _publish_and_wait(args, repo, sha, str(restored.image))


def _publish_and_wait(args, repo, sha: str, image: str) -> int:
    from ctr.deploy.errors import DeployError

    if args.push:
        repo.push(args.remote, repo.branch())
        sha = repo.head()
    if not args.wait:
        return 0
    if not args.push:
        raise DeployError("--wait requires --push, because Argo CD syncs the remote branch, "
                          "not this working tree")
    return _report_status(args, image, sha)


def run_history(args) -> int:
    from ctr.deploy import promotions
    from ctr.deploy.gitrepo import GitRepository

    entries = promotions.history(GitRepository(args.repo), args.environment)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_dict(), sort_keys=True))
        return 0
    if not entries:
        print(f"{args.environment} has no promotions yet")
        return 0
    print(f"{'WHEN':25} {'ACTION':8} {'MODEL':24} {'MLFLOW RUN':34} COMMIT")
    for entry in entries:
        model = f"{entry.model_name} v{entry.model_version}"
        print(f"{entry.committed_at:25} {entry.action:8} {model:24} {entry.run_id or '-':34} "
              f"{entry.commit[:10]}")
    return 0


def run_status(args) -> int:
    from ctr.deploy import promotions
    from ctr.deploy.gitrepo import GitRepository

    image = args.image
    if not image:
        image = str(promotions.current_release(GitRepository(args.repo), args.environment).image)
    return _report_status(args, image, args.revision)


def _report_status(args, image: str, revision: str) -> int:
    from ctr.deploy.status import (
        ClusterReader,
        Target,
        api_client,
        eks_api_client,
        wait_for_rollout,
    )

    target = Target(args.application or f"ctr-{args.environment}", args.argocd_namespace,
                    args.namespace, args.deployment)
    if args.eks_cluster:
        reader = ClusterReader(lambda: eks_api_client(args.eks_cluster, args.region))
    else:
        reader = ClusterReader(lambda: api_client(args.kubeconfig, args.context))
    state = wait_for_rollout(reader, target, image, revision, args.min_ready, args.timeout,
                             args.interval)
    stream = sys.stdout if state.exit_code == 0 else sys.stderr
    label = {"progressing": "still progressing" + (f" after {args.timeout:.0f} s" if args.timeout else "")}
    print(f"{args.environment}: {label.get(state.state, state.state)}: {state.message}", file=stream)
    return state.exit_code


def main(argv: list[str] | None = None) -> int:
    """Run ``ctr deploy`` on its own, with the error handling of ``ctr``."""
    import logging

    from ctr_inference.errors import CtrError

    parser = argparse.ArgumentParser(prog="ctr")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except CtrError as error:
        print(f"ctr {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
