"""``python -m ecgfast`` is the ``ecgfast`` command."""

import sys

from ecgfast.cli import main

sys.exit(main())
