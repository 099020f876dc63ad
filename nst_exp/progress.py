"""Which tqdm draws the progress bar: a widget where a notebook can show one, else a text bar.

``tqdm.auto`` falls back to the text bar in a notebook without ipywidgets,
but warns (``TqdmWarning: IProgress not found``) and, since a kernel's stderr
is no terminal, a bar left to ``disable=None`` is hidden: no bar at all. Here
the choice is made when a bar is created, and a notebook always gets one.
(tqdm.contrib imports tqdm.auto, so its warning is silenced here too.)
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

from tqdm.std import TqdmWarning
from tqdm.std import tqdm as text_bar


def in_notebook() -> bool:
    """Inside a Jupyter kernel (notebook, JupyterLab, VS Code), as tqdm.autonotebook decides; not qtconsole or Spyder."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    if any(name == "QT_API" or name.startswith("SPYDER") for name in os.environ):
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and not any(console in type(shell).__name__.lower() for console in ("qt", "spyder"))


def widgets_available() -> bool:
    """ipywidgets imports, so tqdm.notebook can draw its widget."""
    from tqdm.notebook import IProgress

    return IProgress is not None


def bar_class(enabled: bool) -> tuple[type[text_bar], bool | None]:
    """(tqdm class, its ``disable=``) for a bar that shows if ``enabled``.

    A terminal gets the text bar (``disable=None``: hidden when output is
    redirected); a notebook gets the widget if ipywidgets is installed, else
    the text bar, shown.
    """
    if not enabled:
        return text_bar, True
    if not in_notebook():
        return text_bar, None
    if widgets_available():
        from tqdm.notebook import tqdm as widget_bar

        return widget_bar, False
    return text_bar, False


def logging_above(bar: text_bar) -> contextlib.AbstractContextManager:
    """While entered, console log handlers write through ``bar``'s class, above the bar."""
    with warnings.catch_warnings():  # tqdm.contrib imports tqdm.auto, which warns without ipywidgets
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.contrib.logging import logging_redirect_tqdm
    return logging_redirect_tqdm(tqdm_class=type(bar))
