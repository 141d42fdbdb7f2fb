"""Command-line interface: dispatches to the subcommand modules ``toxlens/cli_*.py``.

A subcommand living in its own module (``toxlens/cli_*.py``) exposes ``add_parser(sub)`` and
``run(args) -> int``; it is wired in by adding the module to :data:`SUBCOMMANDS`.

Every failure the user can cause is a ToxlensError: printed as one line, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from lens.errors import ToxlensError, exit_status
from toxlens import cli_circuit, cli_edit, cli_evaluate, cli_generate, cli_locate, cli_probe, cli_tokens

# command name -> module with add_parser(sub) and run(args) -> int
SUBCOMMANDS: dict[str, Any] = {
    "locate": cli_locate,
    "tokens": cli_tokens,
    "probe": cli_probe,
    "generate": cli_generate,
    "evaluate": cli_evaluate,
    "edit": cli_edit,
    "circuit": cli_circuit,
}


def build_parser() -> argparse.ArgumentParser:
    from toxlens.version import version

    parser = argparse.ArgumentParser(prog="toxlens", description="Locate and act on toxicity circuits.")
    parser.add_argument("--version", action="version", version=f"toxlens {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    """Command name -> the function that runs it."""
    return {
        **{name: module.run for name, module in SUBCOMMANDS.items()},
    }


def main(argv: list[str] | None = None) -> int:
    from lens.io import sigterm_as_interrupt

    args = build_parser().parse_args(argv)

    def run() -> int:
        command = commands().get(args.command)
        if command is None:
            raise ToxlensError(f"unknown command {args.command!r}")
        with sigterm_as_interrupt():  # SIGTERM cleans up like Ctrl-C: no partial output left behind
            return int(command(args))

    try:
        return exit_status("toxlens", run)
    except KeyboardInterrupt:
        print("toxlens: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
