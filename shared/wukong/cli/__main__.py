"""``python -m wukong.cli``: the same as the ``wukong`` command."""

import sys

from wukong.cli import main

sys.exit(main())
