"""``python -m streams.cli``: the ``spyglass`` command, for child processes started with this interpreter."""

from __future__ import annotations

import sys

from streams.cli import main

sys.exit(main())
