"""Test stand-in for torchsde, which Debian does not package (see _standin.py)."""
from _standin import module_getattr

__getattr__ = module_getattr("torchsde")
