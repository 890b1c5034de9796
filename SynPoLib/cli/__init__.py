"""The ``synpo`` command. Nothing in SynPoLib imports this package: it only calls the library.

Each subcommand is a module with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit code``, listed in :data:`COMMANDS`. Errors a user can fix end with
exit code 2 and one line saying what to fix; Ctrl-C ends with 130.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import Optional, Sequence

from ..errors import InputError

#: subcommand -> the module that implements it (imported when the parser is built)
COMMANDS = {
    "segment": "segment",
    "batch": "batch",
    "demo": "demo",
    "eval": "eval",
    "weights": "weights",
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="synpo", description="SynPo: one-shot segmentation from one labelled slice.")
    parser.add_argument("--version", action="version", version=f"synpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = import_module(f".{module_name}", __name__)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"synpo: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # the library's input checks
        print(f"synpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synpo: cancelled; nothing was written", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "build_parser", "main"]
