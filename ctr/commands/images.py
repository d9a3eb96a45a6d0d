"""Image commands: ``ctr image bake``."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    image = subparsers.add_parser("image", help="bake and inspect model images")
    commands = image.add_subparsers(dest="image_command", required=True, metavar="IMAGE_COMMAND")
    bake = commands.add_parser("bake", help="bake a registered model version (models:/NAME/VERSION) into an image")
    bake.add_argument("model", help="registered model name")
    bake.add_argument("version", help="model version")
    bake.add_argument("--layout", type=Path, help="OCI image layout folder (default: .ctr/images/MODEL)")
    bake.add_argument("--workdir", type=Path, default=Path(".ctr/bundles"), help="where bundles are written")
    bake.set_defaults(handler=run_bake)


def run_bake(args) -> int:
    from ctr_images.bake import bake

    layout = args.layout or Path(".ctr/images") / args.model
    result = bake(args.model, args.version, args.workdir, layout)
    print(f"{result.image} {result.image.digest} bundle {result.bundle_digest}")
    return 0
