"""Shared by the stand-in modules: names that import cleanly and fail loudly
when used. ComfyUI imports these libraries at start-up but only calls them
from model code, which the real-peer tests never run."""


def missing(module, name):
    class Missing:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(
                f"{module}.{name} is a test stand-in (docker/realcomfy/stubs): "
                "model code is not supported in the real-peer tests"
            )

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            cls()

    Missing.__name__ = name
    Missing.__qualname__ = name
    Missing.__module__ = module
    return Missing


def module_getattr(module):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(module, name)

    return __getattr__
