"""`python -m bot` is `atomizer-hq`."""

import sys

from bot.cli import main

sys.exit(main())
