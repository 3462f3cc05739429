"""`python -m emoprobe` runs the command line."""

import sys

from emoprobe.cli import main

sys.exit(main())
