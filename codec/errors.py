"""The error hierarchy of the codec: every failure a user can cause has a class here.

Each class also subclasses a built-in (``ValueError``, ``OSError``...) so callers that do not know
ours still catch them sensibly, the way PyAV's errors do.
"""

from __future__ import annotations

__all__ = [
    "DiticError",
    "FormatError",
    "TruncatedPayloadError",
    "ChecksumError",
    "UnsupportedVersionError",
    "ModelMismatchError",
    "LimitExceededError",
    "CheckpointError",
    "InputImageError",
]


class DiticError(Exception):
    """Base class of every error this package raises on purpose."""


class FormatError(DiticError, ValueError):
    """A payload or container does not follow the format (wrong magic, bad field, lying length)."""


class TruncatedPayloadError(FormatError):
    """The payload ends before a field that its header promises."""


class ChecksumError(FormatError):
    """A CRC32 stored in the payload does not match the bytes it covers."""


class UnsupportedVersionError(FormatError):
    """The payload was written in a format version this code does not read."""


class ModelMismatchError(DiticError, ValueError):
    """The payload was encoded by a model other than the one asked to decode it."""


class LimitExceededError(FormatError):
    """A size claimed by the input (pixels, bytes, frames) exceeds a configured safety limit."""


class CheckpointError(DiticError, ValueError):
    """A checkpoint is malformed, of an unknown format version, or does not fit its config."""


class InputImageError(DiticError, ValueError):
    """An input image cannot be read or is not acceptable (corrupt, empty, too large)."""
