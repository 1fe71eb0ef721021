"""Stubichat's chat and thread API."""

__version__ = "0.1.0"
