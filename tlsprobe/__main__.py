"""`python -m tlsprobe` is the `tlsprobe` command."""

import sys

from tlsprobe.cli.main import main

sys.exit(main())
