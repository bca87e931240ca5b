"""Logging: one JSON object per line on stderr, with the extras a record carries.

Nothing secret is ever passed to a logger (keys, passwords, tokens, payload bodies); the
formatter also masks anything that looks like a key, as a second line of defence.
"""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName", "color_message"}
_KEY_LIKE = re.compile(r"lehnz_(pk|sk)_[A-Za-z0-9_-]{6,}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode()
        return _KEY_LIKE.sub(lambda m: f"lehnz_{m.group(1)}_***", line)


def configure(level: str = "INFO", *, access_log: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours (and is not JSON).
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").handlers[:] = []
    logging.getLogger("uvicorn.error").propagate = True
    logging.getLogger("lehnz.access").disabled = not access_log
    for noisy in ("arq.worker", "arq.jobs", "alembic", "alembic.runtime.plugins", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.getLogger().level, logging.WARNING))
