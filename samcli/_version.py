"""The package version, in a module of its own so the layers that samcli/__init__.py imports can read it."""
__version__ = "0.2.0"
