"""``python -m vlmguard ...``: the same commands as the ``vlmguard`` script."""

import sys

from .cli import main

sys.exit(main())
