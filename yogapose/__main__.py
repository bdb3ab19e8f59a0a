"""``python -m yogapose predict|serve|emulator ...``: a launcher for :mod:`localtools.cli` (not in the image)."""
from localtools.cli import main

raise SystemExit(main())
