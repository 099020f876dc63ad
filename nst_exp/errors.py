"""The exceptions nst_exp raises for problems a user can fix, and for a run a user stopped."""

import difflib
import signal
from collections.abc import Sequence


class NstError(Exception):
    """A problem with the user's input or environment.

    The message says what failed, what is allowed and how to fix it; the
    command-line entry point prints it without a traceback.
    """


class RunFailed(NstError):
    """A run that stopped partway (e.g. out of memory), with its metrics so far for metrics.json."""

    def __init__(self, message: str, metrics: dict) -> None:
        super().__init__(message)
        self.metrics = metrics


class ConfigError(NstError):
    """Hydra could not compose the config: a misspelt key, a wrong value, an unknown option or a syntax error.

    The message is Hydra's, with the cause it names, as the command line prints it.
    """


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; exit status 128 + ``signal``.

    ``saved``: the runner wrote this session's image and metrics (result.png,
    metrics.json) before raising it; False for a stop before or while they were written.
    """

    def __init__(self, message: str, signal_number: int | None, saved: bool = True) -> None:
        super().__init__(message)
        self.signal = signal_number if signal_number is not None else signal.SIGINT
        self.saved = saved


def one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's text on one line, at most ``limit`` characters: for a message that names a damaged file."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nearest(name: str, known: Sequence[str]) -> str | None:
    """The known name closest to a misspelt ``name`` (difflib's judgement), or None when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return close[0] if close else None


def did_you_mean(name: str, known: Sequence[str], prefix: str = "") -> str:
    """`` Did you mean 'beta'?`` for the known name nearest ``name`` (``prefix`` before it), or "" when none is close."""
    close = nearest(name, known)
    return f" Did you mean '{prefix}{close}'?" if close is not None else ""
