"""`python -m strongroom` runs the CLI."""

from strongroom.cli import main

main()
