"""`python -m netdef`: the `netdef` command."""
from .cli import run

run()
