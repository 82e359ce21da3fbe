"""Driving a codec's stream halves, shared by the three codec test files.

Each protocol's tests feed recorded frames through a decoder and model events through an
encoder the same way; only the frames and the start arguments differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from router.chat.codecs import Codec, StreamEncoder


def decode_frames(codec: Codec, frames: Iterable[tuple[str | None, Any]]) -> list[Any]:
    """The events of ``frames`` fed to a fresh decoder, then what it owes at the end."""
    decoder = codec.stream_decoder()
    events = [e for event, data in frames for e in decoder.feed(event, data)]
    return events + decoder.close()


def encode_events(
    encoder: StreamEncoder,
    start: tuple[str, str, int],
    events: Iterable[Any],
    extra: Any = None,
) -> list[Any]:
    """``encoder``'s frames for ``start(*start)``, each event, and ``finish(extra)``."""
    frames = encoder.start(*start)
    for event in events:
        frames += encoder.feed(event)
    return frames + encoder.finish(extra)
