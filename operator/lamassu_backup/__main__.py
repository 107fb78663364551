"""``python -m lamassu_backup`` runs the command line."""

from .cli import main

raise SystemExit(main())
