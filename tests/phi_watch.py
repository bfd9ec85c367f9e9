"""T26 over the whole suite: no health information in any log line.

Every log record the app emits while the suite runs (the `confide` loggers at DEBUG,
whatever else reaches the root logger) is checked against canaries: the names and email
addresses of every client and contact the personas create, and whatever a test adds with
`watch()` (message texts, away texts). A hit fails the run at its end, with the logger's
name and the canary, never silently. The subprocess servers' own output is checked by
tests/integration/test_no_phi_in_logs.py.
"""

import logging
import threading


class PhiWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._lock_canaries = threading.Lock()
        self.canaries: set[str] = set()
        self.hits: list[tuple[str, str]] = []
        self.records = 0

    def watch(self, *values: str) -> None:
        with self._lock_canaries:
            # Short values ("Al") would match by accident; every canary is distinctive.
            self.canaries.update(v for v in values if v and len(v) >= 6)

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            line = record.getMessage()
        except Exception:  # a bad format string is a bug too, but not this one
            line = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            line += " " + repr(record.exc_info[1])
        with self._lock_canaries:
            canaries = list(self.canaries)
        for canary in canaries:
            if canary in line:
                self.hits.append((record.name, canary))


WATCH = PhiWatch()


def install() -> None:
    logging.getLogger().addHandler(WATCH)
    logging.getLogger("confide").setLevel(logging.DEBUG)
