"""Placeholder until the credentials CLI lands."""

import typer

app = typer.Typer()
