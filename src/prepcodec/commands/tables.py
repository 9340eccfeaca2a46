"""The console that prints the commands' tables: full width when the output is a pipe or a file.

Rich sizes tables to the terminal, and to 80 columns when there is none, so `prepcodec codecs | less` or a log file
would get truncated cells ("libx265 (PyAV 1…"). A table printed for a reader who cannot resize it gets the room its
longest row needs.
"""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 240


def table_console() -> Console:
    """A stdout console: the terminal's width on a terminal, PIPE_WIDTH columns otherwise."""
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)
