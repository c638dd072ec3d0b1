"""``python -m experiments`` is the ``moesim`` command."""

import sys

from experiments.cli import main

sys.exit(main())
