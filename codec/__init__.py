"""DiT-IC image codec: ``load_codec(name_or_path)`` -> ``Codec`` (encode images to payloads and back).

Heavy modules (torch, diffusers) load on first use of ``load_codec`` / ``Codec`` / ``get_config``'s
consumers, so ``import codec`` and ``codec.errors`` stay cheap for tools that only read payloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codec import errors
from codec.config import CodecConfig, get_config

if TYPE_CHECKING:
    from codec.api import Codec, load_codec

__all__ = ["load_codec", "Codec", "CodecConfig", "get_config", "errors"]


def __getattr__(name: str) -> Any:
    if name in ("load_codec", "Codec"):
        from codec import api

        return getattr(api, name)
    raise AttributeError(f"module 'codec' has no attribute {name!r}")
