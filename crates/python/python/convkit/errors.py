"""The exceptions convkit raises.

Every one is a :class:`convkit.Error`; most are also the built-in exception a Python
user would catch for the same fault, so ``except ValueError`` and ``except OSError``
work as they do elsewhere. The message is convkit's own: it names the file, the key,
the shape or the value at fault.
"""

from __future__ import annotations

__all__ = ["Error", "ConfigError", "InputError", "WeightsError", "ImageError", "FileError"]


class Error(Exception):
    """Base class of every convkit exception (a thread pool that cannot start raises it
    as it is)."""


class ConfigError(Error, ValueError):
    """An option of a model is invalid: an unknown variant, precision, KxK path or CPU
    capability mask, a depth convkit does not build, a thread count out of range, or a
    capability this CPU lacks."""


class InputError(Error, ValueError):
    """An input is unfit: not an array, the wrong dtype, rank or channel count, a size
    the network cannot take, or a NaN or infinity (the message gives its index)."""


class WeightsError(Error, ValueError):
    """A weights file does not fit the network: a missing key, a tensor of another shape,
    a file of another variant or depth, a value that is not finite, a corrupt file."""


class ImageError(Error, ValueError):
    """An image cannot be decoded or preprocessed (truncated, not an image, too large or
    too elongated)."""


class FileError(Error, OSError):
    """A file cannot be read or written: ``errno``, ``strerror`` and ``filename`` are set
    as for Python's own ``OSError``."""
