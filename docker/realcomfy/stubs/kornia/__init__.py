"""Test stand-in for kornia, which Debian does not package (see _standin.py)."""
from . import color, filters, morphology  # noqa: F401  (ComfyUI imports these)
