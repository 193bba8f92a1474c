"""`lpm convert ...`: import foreign checkpoints."""

from __future__ import annotations

import typer

app = typer.Typer(help="Convert foreign checkpoints (Wan2.1) to LPM checkpoints.", no_args_is_help=True)
