"""``python -m pipeserve`` is the ``pipeserve`` command."""

from .cli import main

raise SystemExit(main())
