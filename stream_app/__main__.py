"""``python -m stream_app``: the ``fraudstream`` command line."""

from stream_app.cli import main

raise SystemExit(main())
