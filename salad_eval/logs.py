"""Where salad's messages go: ``logging``, under the ``salad_eval`` and ``salad_train`` loggers.

Every library module logs through ``log = logging.getLogger(__name__)``; the packages themselves
add only a ``NullHandler``, so a Python caller (``salad_eval.evaluate``) sees nothing unless it
configures ``logging``, and routes or silences salad with the standard API. The CLIs call
``log_to_stderr()`` once at start (``salad_eval.launch``): INFO and up on stderr, through rich on a
terminal and as plain ``HH:MM:SS LEVEL message`` lines elsewhere (a file, a CI log), the same
terminal test that picks a rich bar or plain lines in ``salad_eval.progress``.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

LOGGERS = ("salad_eval", "salad_train")
_NAME = "salad-cli"  # marks the handler, so a second CLI start in one process replaces it


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a message comes, not as it was at set-up (a test's
    capture, a redirect), as rich's console does on a terminal."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_to_stderr(level: int = logging.INFO) -> None:
    """Show salad's messages at ``level`` and up on stderr (the CLIs' one logging setup)."""
    console = Console(stderr=True)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(
            console=console, show_path=False, log_time_format="[%X]"
        )
    else:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.set_name(_NAME)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _NAME]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
