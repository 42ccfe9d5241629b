"""`python -m switch.cli`: the same as the `rtpswitch` command."""

import sys

from switch.cli import main

sys.exit(main())
