"""Allows ``python -m certctl`` where the console script is not on PATH."""

from certctl.cli import main

main()
