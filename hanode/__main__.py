"""Entry point for ``python3 -m hanode``."""

from hanode.entry import run

run()
