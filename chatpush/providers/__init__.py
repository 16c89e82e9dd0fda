"""Delivery providers: one module each, every send ending in one of three outcomes."""
