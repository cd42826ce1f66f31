"""salad's messages go through ``logging``: a library caller captures, routes or silences them
with the standard API and sees nothing unless it asks; the CLIs show them on stderr (plain
``HH:MM:SS INFO ...`` lines when stderr is not a terminal).

The message used is a real one: a damaged clip of two demo items in the audio store is remade
by the next synthesis, which says so ("audio store: made again: ...")."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from salad_eval.logs import LOGGERS, log_to_stderr
from salad_eval.speech.synth import synthesize
from salad_eval.tasks import load_items

VOICE = "espeak/en-us"
MADE_AGAIN = "audio store: made again: "


@pytest.fixture
def library_loggers():
    """The salad loggers as the packages leave them (a NullHandler, no level), whatever a CLI
    started in this process set up before; restored afterwards."""
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.level)
        logger.handlers[:] = [h for h in logger.handlers if isinstance(h, logging.NullHandler)]
        logger.setLevel(logging.NOTSET)
    yield
    for name, (handlers, level) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).setLevel(level)


def _damage_a_clip(home: Path) -> list:
    """Two demo items synthesized, then one of their clips truncated; returns the items."""
    items = load_items("demo", limit=2)
    manifest = synthesize(items, VOICE, show_progress=False)
    clip = Path(manifest.rows[0].clips[0].path)
    assert home in clip.parents
    clip.write_bytes(clip.read_bytes()[:100])
    return items


def test_a_message_arrives_through_logging_under_salad_eval(fresh_home, library_loggers, caplog):
    items = _damage_a_clip(fresh_home)
    caplog.set_level(logging.INFO, logger="salad_eval")
    assert synthesize(items, VOICE, show_progress=False).repaired
    made = [r for r in caplog.records if r.getMessage().startswith(MADE_AGAIN)]
    assert len(made) == 1 and made[0].levelno == logging.INFO
    assert made[0].name.startswith("salad_eval.")


def test_a_library_caller_sees_nothing_unless_it_asks(fresh_home, library_loggers, capfd):
    items = _damage_a_clip(fresh_home)
    capfd.readouterr()
    assert synthesize(items, VOICE, show_progress=False).repaired
    assert MADE_AGAIN not in capfd.readouterr().err


def test_warning_level_silences_what_the_cli_handler_shows(fresh_home, library_loggers, capfd):
    log_to_stderr()  # as the CLIs start
    items = _damage_a_clip(fresh_home)
    capfd.readouterr()
    assert synthesize(items, VOICE, show_progress=False).repaired
    assert MADE_AGAIN in capfd.readouterr().err
    items = _damage_a_clip(fresh_home)
    logging.getLogger("salad_eval").setLevel(logging.WARNING)
    capfd.readouterr()
    assert synthesize(items, VOICE, show_progress=False).repaired
    assert MADE_AGAIN not in capfd.readouterr().err


def test_the_cli_writes_plain_log_lines_to_stderr_off_a_terminal(fresh_home, library_loggers):
    _damage_a_clip(fresh_home)
    command = [sys.executable, "-m", "salad_eval.cli", "synth", "--tasks", "demo"]
    done = subprocess.run(
        [*command, "--voices", VOICE, "--limit", "2"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    line = rf"^\d\d:\d\d:\d\d INFO {re.escape(MADE_AGAIN)}\S"
    assert re.search(line, done.stderr, re.MULTILINE), done.stderr
    assert MADE_AGAIN not in done.stdout  # stdout holds the command's own output: its summary
