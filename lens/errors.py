"""The one exception type of the package."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ToxlensError(Exception):
    """Raised for every user-facing failure: bad input, unknown names, unreachable models.

    Messages name the offending input, what was expected and what was found (a line number, a hook
    name, a shape), so that the CLI can print them as they are and exit non-zero.
    """


def exit_status(prog: str, run: Callable[[], int]) -> int:
    """``run()``'s status, or 2 with ``prog: error: <message>`` on stderr when it raises a
    :class:`ToxlensError` (the scripts' and the CLI's one way to fail on bad input)."""
    try:
        return run()
    except ToxlensError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
