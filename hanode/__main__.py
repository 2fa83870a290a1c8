"""Entry point for ``python3 -m hanode``."""

from hanode.cli import main

raise SystemExit(main())
