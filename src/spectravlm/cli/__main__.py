"""``python -m spectravlm.cli``: the ``spectravlm`` command."""

import sys

from spectravlm.cli import main

sys.exit(main())
