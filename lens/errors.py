"""The one exception type of the package."""


class ToxlensError(Exception):
    """Raised for every user-facing failure: bad input, unknown names, unreachable models.

    Messages name the offending input, what was expected and what was found (a line number, a hook
    name, a shape), so that the CLI can print them as they are and exit non-zero.
    """
