"""The `lpm` command: one entry point, one sub-application per concern.

Each sub-application lives in its own module under `lpm.cli` and only parses arguments, builds
objects from configs and calls the library.
"""

from __future__ import annotations

import warnings

import typer

from lpm.cli import bench, convert, data, model
from lpm.cli import distill as distill_cli
from lpm.cli import dpo as dpo_cli
from lpm.cli.env import env
from lpm.cli.generate import generate
from lpm.cli.serve import serve
from lpm.cli.train import train
from lpm.cli.train_vae import train_vae

app = typer.Typer(
    name="lpm",
    help="LPM 1.0: characters that speak, listen and idle, offline and in real time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from lpm.cli.env import lpm_version

        typer.echo(f"lpm {lpm_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print lpm's version and exit.",
    ),
) -> None:
    """LPM 1.0: characters that speak, listen and idle, offline and in real time."""


app.add_typer(model.app, name="model")
app.add_typer(convert.app, name="convert")
app.add_typer(data.app, name="data")
app.add_typer(bench.app, name="bench")
app.add_typer(distill_cli.app, name="distill")
app.add_typer(dpo_cli.app, name="dpo")
app.command("train")(train)
app.command("train-vae")(train_vae)
app.command("generate")(generate)
app.command("serve")(serve)
app.command("env")(env)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """lpm's own warnings (a clipped audio file, ...) read as one line, not as a source line."""
    if category.__module__.startswith("lpm."):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def main() -> None:
    warnings.formatwarning = _format_warning
    app()


if __name__ == "__main__":
    main()
