"""``python -m nolabel``: the command-line interface."""
from .cli import main

main()
