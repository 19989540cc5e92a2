"""The client's version, alone so that setup.cfg reads it without importing httpx."""

__version__ = "0.1.0"
