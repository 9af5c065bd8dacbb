"""``python -m textgym``: the same as the ``textgym`` command."""

import sys

from textgym.cli import main

sys.exit(main())
