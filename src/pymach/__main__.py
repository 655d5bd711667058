"""python -m pymach: the pymach command."""

from .tools import main

raise SystemExit(main())
