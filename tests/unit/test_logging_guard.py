"""The guards of T26 themselves: the suite-wide log watch catches a canary, and the
level that logs whole requests is refused outside demo mode."""

import logging
import logging.handlers

import pytest
from pydantic import ValidationError

from confide.config import Settings
from tests import phi_watch


def test_t26_watch_flags_a_canary_in_any_log_line():
    watch = phi_watch.PhiWatch()
    logger = logging.getLogger("confide.test-watch")
    logger.addHandler(watch)
    try:
        watch.watch("Robin Canary-7f3a", "x")  # too short to watch: ignored
        logger.info("sent message %s", 42)
        assert watch.hits == []
        logger.warning("could not notify %s", "Robin Canary-7f3a")
        try:
            raise ValueError("Robin Canary-7f3a")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(watch)
    assert watch.hits == [
        ("confide.test-watch", "Robin Canary-7f3a"),
        ("confide.test-watch", "Robin Canary-7f3a"),
    ]
    assert "x" not in watch.canaries


def test_t26_the_suite_wide_watch_is_installed():
    assert phi_watch.WATCH in logging.getLogger().handlers
    assert logging.getLogger("confide").isEnabledFor(logging.DEBUG)


def test_t26_trace_logging_is_refused_outside_demo_mode(tmp_path):
    with pytest.raises(ValidationError, match="CONFIDE_LOG_LEVEL=trace"):
        Settings(data_dir=tmp_path, log_level="trace")
    assert Settings(data_dir=tmp_path, log_level="trace", demo=True).log_level == "trace"
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, log_level="loud")  # type: ignore[arg-type]
