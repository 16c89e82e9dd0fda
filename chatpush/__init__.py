"""chatpush: open push-flex middleware speaking GMS Chat API v2."""

__version__ = "0.1.0"
