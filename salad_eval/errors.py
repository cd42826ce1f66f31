"""The one exception type that reaches users as a one-line message instead of a traceback."""


class SaladError(Exception):
    """A problem the user can fix: bad input, a missing asset or extra, an unreachable model.

    The message must say what went wrong and what to do, on one line. The CLIs print it as
    ``error: <message>`` and exit with status 2.
    """
