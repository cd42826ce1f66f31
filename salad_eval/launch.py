"""How a salad command line starts and ends (``salad-eval`` and ``salad-train`` alike).

Start: salad's log messages shown on stderr (``salad_eval.logs``), third-party output quieted,
SIGTERM made to unwind like Ctrl-C (worker pools stopped).
End: a mistake the user can fix, whether salad's (``SaladError``) or the command line's (a bad
option value, a missing option), is one line ``error: ...`` and exit status 2, never a traceback;
the bad cache entries the run rebuilt are counted in one plain line per kind.
"""

from __future__ import annotations

import sys

import typer
from typer._click import exceptions as click  # typer's own click (vendored since 0.20)

from salad_eval.errors import SaladError
from salad_eval.home import DISK_FULL, disk_error, rebuilt_report
from salad_eval.logs import log_to_stderr
from salad_eval.progress import quiet_third_party
from salad_eval.workers import stop_on_signals

INTERRUPTED = "interrupted; the same command resumes where it stopped"


def _usage_line(err: click.UsageError) -> str:
    message = " ".join(err.format_message().split()).rstrip(".")
    command = err.ctx.command_path if err.ctx is not None else "the command"
    return f"{message}; see `{command} --help`"


def run_cli(app: typer.Typer) -> None:
    """Run ``app`` on ``sys.argv`` and exit with its status."""
    log_to_stderr()
    quiet_third_party()
    stop_on_signals()
    status = 0
    try:
        result = app(standalone_mode=False)
        status = result if isinstance(result, int) else 0
        if status == 130:  # typer turned Ctrl-C into exit status 130
            print(INTERRUPTED, file=sys.stderr)
    except SaladError as err:
        status = _fail(str(err))
    except click.NoArgsIsHelpError:  # typer has printed the help
        status = 2
    except click.UsageError as err:
        status = _fail(_usage_line(err))
    except click.ClickException as err:
        status = _fail(err.format_message())
    except (KeyboardInterrupt, typer.Abort):
        print(INTERRUPTED, file=sys.stderr)
        status = 130
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        status = _fail(str(disk_error(err)))
    finally:
        for line in rebuilt_report():
            print(line, file=sys.stderr)
    sys.exit(status)


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2
