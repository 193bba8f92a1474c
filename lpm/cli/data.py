"""`lpm data ...`: build datasets (the Stage world, real footage) and feature caches."""

from __future__ import annotations

import typer

app = typer.Typer(help="Build datasets: the Stage world and real footage.", no_args_is_help=True)
