"""python -m empo_cli: the `empo` command."""

import sys

from .main import main

sys.exit(main())
