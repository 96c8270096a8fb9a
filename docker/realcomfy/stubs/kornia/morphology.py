"""Test stand-in for kornia.morphology (see _standin.py)."""
from _standin import module_getattr

__getattr__ = module_getattr("kornia.morphology")
