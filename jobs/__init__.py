"""Thin entry points: each module parses its arguments, calls ``pipeline``/``codec`` and prints."""
