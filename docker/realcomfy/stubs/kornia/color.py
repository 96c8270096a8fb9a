"""Test stand-in for kornia.color (see _standin.py)."""
from _standin import module_getattr

__getattr__ = module_getattr("kornia.color")
