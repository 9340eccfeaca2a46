"""`prepcodec` command line: one Typer app; each command group lives in `prepcodec.commands.<name>`.

Errors a user can cause are `PrepcodecError`s and print as one line with a non-zero exit.
"""

from __future__ import annotations

import sys

import typer

from prepcodec.commands import COMMAND_MODULES
from prepcodec.errors import PrepcodecError

app = typer.Typer(
    name="prepcodec",
    help="Neural preprocessing for standard image codecs, measured in real bytes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in COMMAND_MODULES:
    _module.register(app)


def main() -> None:
    """Console entry point: run the app, turning user errors into one-line messages."""
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except PrepcodecError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        # usage errors of the (possibly vendored) click underneath typer: show them like click would
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
