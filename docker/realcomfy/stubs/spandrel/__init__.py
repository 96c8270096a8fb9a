"""Test stand-in for spandrel, which Debian does not package (see _standin.py)."""
from _standin import module_getattr

__getattr__ = module_getattr("spandrel")
