"""Deploy history as git history: promote, list, roll back and watch model images.

A promotion is one commit that changes the release block of an overlay
(``gitops/overlays/<env>/kustomization.yaml``: image reference with digest,
model name and version) and carries trailers naming the model version and
MLflow run. A rollback is ``git revert`` of a promotion commit. Argo CD syncs
whatever the branch contains, and ``status`` reads the Argo CD Application and
the worker Deployment through the Kubernetes API to tell when a commit is live.

Modules:
    errors      exception hierarchy
    images      image references (``registry/repository:tag@sha256:…``)
    overlay     reading and rewriting an overlay's release block
    gitrepo     the git commands the deploy commands run
    registry    whether an image exists, its digest and its labels
    promotions  promote, history and rollback
    status      the rollout state of an environment
"""
