"""The command's logging: our lines visible by default, -q keeps warnings, -v adds names and debug."""

from __future__ import annotations

import logging

import pytest

from cli import main
from cli.logs import _OUR_LOGGERS, configure_logging


@pytest.fixture(autouse=True)
def restore_loggers():
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in _OUR_LOGGERS}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def _say(capsys) -> list[str]:
    logging.getLogger("jobs.transcribe").debug("details")
    logging.getLogger("jobs.transcribe").info("transcribe: 3 inputs")
    logging.getLogger("speech.asr.vad").warning("odd audio")
    logging.getLogger("somebody.else").warning("not ours")  # another library's logger: not ours to print
    return capsys.readouterr().err.splitlines()


def test_default_shows_our_info_lines(capsys):
    configure_logging()
    configure_logging()  # again (as every cli.main call does): still one handler, one line each
    assert _say(capsys) == ["speech: transcribe: 3 inputs", "speech: warning: odd audio"]


def test_quiet_keeps_warnings_and_verbose_adds_debug_with_names(capsys):
    configure_logging(quiet=True)
    assert _say(capsys) == ["speech: warning: odd audio"]
    configure_logging(verbose=True)
    assert _say(capsys) == [
        "speech: [jobs.transcribe] details",
        "speech: [jobs.transcribe] transcribe: 3 inputs",
        "speech: warning: [speech.asr.vad] odd audio",
    ]


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["-v", "-q", "export", "out", "--format", "srt", "-o", "subs"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
