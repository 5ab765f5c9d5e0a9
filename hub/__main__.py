"""`python -m hub`: the `hub` command."""

import sys

from hub.app.cli import main

sys.exit(main())
