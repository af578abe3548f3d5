"""``python -m mimicache.cli``: the same as the ``mimicache`` console script."""

import sys

from mimicache.cli.main import main

sys.exit(main())
