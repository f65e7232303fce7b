"""`python -m netdef`: the `netdef` command."""
import sys

from .cli import main

sys.exit(main())
