"""Forwarding benchmarks: aiosfu against Janus VideoRoom on loopback (see benchmarks/README.md)."""
