"""Every option and argument of every ``ctr`` subcommand has help text."""

from __future__ import annotations

import argparse

from ctr.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    """Yield (command path, action) for every action of the parser and its subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from walk(subparser, (*path, name))
        else:
            yield path, action


def test_every_option_has_help():
    missing = [f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
               for path, action in walk(build_parser(), ("ctr",)) if not action.help]

    assert missing == []
