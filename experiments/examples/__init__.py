"""Worked examples of plugging a researcher's own functions into the shipped trainer (see the README)."""
