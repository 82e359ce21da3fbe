"""Server-Sent Events decoding for streamed upstream answers.

Kept apart from router/upstream.py: it is pure byte handling, tested on its own (every
split of a stream, every line ending).
"""

from __future__ import annotations


class SSEDecoder:
    """Incremental Server-Sent Events parser: bytes in, (event, data) pairs out.

    Handles LF, CRLF and CR line ends (also split across chunks), comments, multi-line
    ``data`` and ``event`` fields; ignores ``id`` and ``retry``.
    """

    __slots__ = ("_buf", "_data", "_event", "_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = b""
        self._cr = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.splitlines(keepends=True)
        if lines and lines[-1][-1:] not in (b"\n", b"\r"):
            self._buf = lines.pop()
        else:
            self._buf = b""
        self._cr = bool(lines) and lines[-1][-1:] == b"\r" and not self._buf
        out: list[tuple[bytes, bytes]] = []
        for line in lines:
            self._line(line.rstrip(b"\r\n"), out)
        return out

    def flush(self) -> list[tuple[bytes, bytes]]:
        """At end of stream: a last event not followed by a blank line still counts."""
        out: list[tuple[bytes, bytes]] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[tuple[bytes, bytes]]) -> None:
        if not line:
            if self._data:
                out.append((self._event or b"message", b"\n".join(self._data)))
            self._data = []
            self._event = b""
        elif line[:1] == b":":
            return
        else:
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
