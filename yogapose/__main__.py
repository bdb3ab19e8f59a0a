"""``python -m yogapose predict|serve|emulator ...`` (see :mod:`yogapose.cli`)."""

from .cli import main

raise SystemExit(main())
