"""Image commands: ``ctr image bake|push|show|runtime|base``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ctr_inference.cpu import HOST, TARGET_FLAGS

# ctr_images.compile.DEFAULT_TARGET, repeated because that module imports NumPy,
# which would slow down `ctr --help`.
DEFAULT_COMPILE_TARGET = "x86-64-v3"
INSECURE_HELP = ("use plain HTTP without TLS verification (default: only for registries on localhost "
                 "and 127.0.0.0/8)")


def register(subparsers) -> None:
    image = subparsers.add_parser("image", help="bake, push and inspect model images")
    commands = image.add_subparsers(dest="image_command", required=True, metavar="IMAGE_COMMAND")

    bake = commands.add_parser(
        "bake", help="bake a registered model version (models:/NAME/VERSION) into an image",
        description="Reads the MLflow registry at $MLFLOW_TRACKING_URI, or without it the demo's local "
                    "store .ctr/mlflow/mlflow.db (no server needed).")
    bake.add_argument("model", help="registered model name")
    bake.add_argument("version", help="model version number, or an alias such as champion")
    bake.add_argument("--layout", type=Path, help="OCI image layout folder to write (default: .ctr/images/MODEL)")
    bake.add_argument("--workdir", type=Path, default=Path(".ctr/bundles"), help="folder the bundles are written to (default: .ctr/bundles)")
    bake.add_argument("--base", default=os.environ.get("CTR_RUNTIME_IMAGE", "scratch"),
                      help="runtime image to build on: oci:DIR:TAG or HOST/REPOSITORY[:TAG|@DIGEST]; runtime "
                           "builds or reuses this checkout's runtime image on $BASE_IMAGE; scratch gives an image "
                           "with the bundle alone (default: $CTR_RUNTIME_IMAGE or scratch)")
    bake.add_argument("--no-compile", dest="compile", action="store_false",
                      help="leave the compiled form and check rows out of the bundle, so workers score with "
                           "LightGBM (default: compile with lleaves, or reuse the compiled form cached in "
                           "$CTR_CACHE_DIR/compiled, else .cache/images/compiled)")
    bake.add_argument("--compile-target", default=DEFAULT_COMPILE_TARGET, choices=[*TARGET_FLAGS, HOST],
                      help="x86-64 micro-architecture level the compiled form runs on, or host for the baking "
                           f"CPU only (default: {DEFAULT_COMPILE_TARGET})")
    bake.set_defaults(handler=run_bake)

    push = commands.add_parser("push", help="verify a baked image, push it, and record it on the model version")
    push.add_argument("source", help="OCI image layout written by `ctr image bake`, as DIR or DIR:TAG")
    push.add_argument("destination", help="registry repository HOST[:PORT]/REPOSITORY[:TAG] (tag default: "
                                          "the baked tag)")
    push.add_argument("--no-record", action="store_true",
                      help="do not check or tag the MLflow model version")
    push.add_argument("--insecure", action="store_true", help=INSECURE_HELP)
    push.set_defaults(handler=run_push)

    show = commands.add_parser("show", help="print which model an image serves, from its labels")
    show.add_argument("reference", help="oci:DIR[:TAG], DIR[:TAG], or HOST/REPOSITORY[:TAG|@DIGEST]")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.add_argument("--insecure", action="store_true", help=INSECURE_HELP)
    show.set_defaults(handler=run_show)

    runtime = commands.add_parser("runtime", help="build the inference runtime image (model-images/runtime.Dockerfile)")
    runtime.add_argument("--base", default=os.environ.get("BASE_IMAGE") or None,
                         help="base image with Python 3.11, such as docker.io/library/python:3.11-slim-bookworm "
                              "(default: $BASE_IMAGE, else the debootstrap base of `ctr image base`)")
    runtime.add_argument("--layout", type=Path, help="OCI image layout folder (default: .ctr/images/runtime)")
    runtime.add_argument("--tag", help="image tag (default: ctr-runtime-<git short sha>)")
    runtime.set_defaults(handler=run_runtime)

    base = commands.add_parser("base", help="build the Debian base image with debootstrap (cached in .cache/images)")
    base.set_defaults(handler=run_base)


def run_bake(args) -> int:
    from ctr_images.bake import bake

    from ctr.tracking import check_artifacts_reachable, use_tracking_store

    use_tracking_store()
    check_artifacts_reachable(args.model, args.version)
    layout = args.layout or Path(".ctr/images") / args.model
    result = bake(args.model, args.version, args.workdir, layout, base=args.base, compile_model=args.compile,
                  compile_target=args.compile_target)
    engine = (result.metadata.get("compiled") or {}).get("engine") or "none"
    print(f"{result.image} {result.image.digest} bundle {result.bundle_digest} compiled {engine}")
    return 0


def run_push(args) -> int:
    from ctr_images.publish import push_model_image

    from ctr.tracking import use_tracking_store

    if not args.no_record:
        use_tracking_store()
    pushed = push_model_image(args.source, args.destination, record=not args.no_record,
                              tls_verify=False if args.insecure else None)
    if not args.no_record:
        print(f"recorded on model {pushed.facts.model_name} version {pushed.facts.model_version}")
    # The last line is the reference alone, for scripts that pin it in GitOps manifests.
    print(pushed.reference)
    return 0


def run_show(args) -> int:
    from ctr_images.publish import describe_image

    facts = describe_image(args.reference, tls_verify=False if args.insecure else None)
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    width = max(len(key) for key in facts)
    for key, value in facts.items():
        print(f"{key:<{width}}  {value or '-'}")
    return 0


def run_runtime(args) -> int:
    from ctr_images.runtime_image import build_runtime_image

    image = build_runtime_image(base=args.base, layout=args.layout, tag=args.tag)
    print(f"{image.reference} {image.digest} base {image.base.name}@{image.base.digest}")
    return 0


def run_base(args) -> int:
    from ctr_images.base_image import ensure_base_image

    image = ensure_base_image()
    print(f"{image.reference} {image.digest}")
    return 0
