"""Outbound webhook dispatcher engine."""

__version__ = "0.1.0"
