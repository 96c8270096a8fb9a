"""Test stand-in for kornia.filters (see _standin.py)."""
from _standin import module_getattr

__getattr__ = module_getattr("kornia.filters")
