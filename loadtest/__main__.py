"""``python -m loadtest``: the same as ``sfu-loadtest``."""

from loadtest.cli import main

main()
