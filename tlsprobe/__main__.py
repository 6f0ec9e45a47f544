"""`python -m tlsprobe` is the `tlsprobe` command."""

import sys

from tlsprobe.cli import main

sys.exit(main())
