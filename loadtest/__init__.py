"""Load generator for aiosfu: ``sfu-loadtest`` / ``python -m loadtest`` (docs/operations.md)."""
