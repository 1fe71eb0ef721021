"""Stubichat's generation service: one HTTP API over OpenAI-compatible upstreams."""

__version__ = "0.1.0"
