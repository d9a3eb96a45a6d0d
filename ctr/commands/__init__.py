"""Subcommand modules of the ``ctr`` CLI; each defines ``register(subparsers)``."""
