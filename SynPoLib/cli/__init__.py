"""The ``synpo`` command. Nothing in SynPoLib imports this package: it only calls the library.

Each subcommand is a module with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit code``, listed in :data:`COMMANDS`. How a run ends, on stderr in
one line:

- an error a user can fix: exit code 2, ``synpo: error: <what to do>``;
- Ctrl-C at any moment, the start-up included: exit code 130;
- SIGTERM: exit code 143 (128 + 15).

Nothing is written unless the run succeeds (outputs are staged, SynPoLib.io); an
interrupt after the outputs were put in place says so.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from importlib import import_module
from typing import Optional, Sequence

from ..errors import InputError, SynPoError, Terminated

#: subcommand -> the module that implements it (imported when the parser is built)
COMMANDS = {
    "segment": "segment",
    "demo": "demo",
    "eval": "eval",
    "weights": "weights",
}

#: exit codes of an interrupted run: 128 + the signal's number, as a shell reports it
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


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


def _raise_terminated(signum, frame):
    raise Terminated("terminated (SIGTERM)")


def _stopped(args: Optional[argparse.Namespace], why: str) -> str:
    written = getattr(args, "written", None)
    if written:
        return f"synpo: {why} after the outputs were written ({', '.join(written)})"
    return f"synpo: {why}; nothing was written"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one ``synpo`` command; returns its exit code (0, 2, 130, 143, ...)."""
    args = None
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so staged files are removed and the exit is clean
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except Terminated:
        print(_stopped(args, "terminated"), file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(_stopped(args, "cancelled (Ctrl-C)"), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InputError, SynPoError) as exc:
        print(f"synpo: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # the library's input checks that predate SynPoError
        print(f"synpo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def console() -> None:
    """The ``synpo`` program: :func:`main`, then an exit no late Ctrl-C can turn into a traceback."""
    try:
        code = main()
    except KeyboardInterrupt:  # between main's handlers and its return
        print("synpo: cancelled (Ctrl-C)", file=sys.stderr)
        code = EXIT_INTERRUPTED
    # the work is over: a signal during interpreter shutdown must not print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.flush()
    sys.exit(code)


__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "build_parser", "console", "main"]
