"""Log capture for tests that read what keymeta logs.

structlog loggers are configured once and cached on first use, bound to the stderr of that moment; under
pytest's capture that is not the stream a later test reads. ``logging_to_current_stderr()`` configures JSON
logs at debug level on the stderr of the running test and restores the previous configuration afterwards.
Call it inside the test body: during fixture setup the capture's stderr is another object.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from domain.platform.logs import configure_logging
from domain.platform.settings import Settings


def uncache_loggers() -> None:
    """Module-level structlog proxies cache their logger on first use: make them read the configuration again."""
    for module in list(sys.modules.values()):
        proxy = getattr(module, "log", None)
        if type(proxy).__name__ == "BoundLoggerLazyProxy":
            vars(proxy).pop("bind", None)


@contextmanager
def logging_to_current_stderr(settings: Settings) -> Iterator[None]:
    saved = structlog.get_config()
    configure_logging(settings.model_copy(update={"log_format": "json", "log_level": "debug"}))
    uncache_loggers()
    try:
        yield
    finally:
        structlog.configure(**saved)
        uncache_loggers()
        structlog.contextvars.clear_contextvars()
