"""One decoded-size budget per request: every byte a request decodes to, counted once.

A door makes one `DecodeBudget` with its decoded cap (5 MiB on the SDK routes and OTLP,
8 MiB for a Firehose delivery) and hands it to every step that makes bytes out of the
body: the body's own gzip/deflate (or the body itself when it is not compressed), and any
decompression nested inside it (a CloudWatch Logs record in a Firehose delivery). Steps
that only shrink what was already counted (base64, JSON parsing, splitting lines) take
nothing. Past the cap the request is a 413, found while decompressing: `inflate` asks
zlib for at most the budget left plus one byte, so a bomb costs at most the cap in memory,
whichever record or member it hides in.
"""

from __future__ import annotations

import zlib

from chalicelib.contract.errors import too_large

# zlib output asked for per call: small enough that the cap is never overshot by much.
CHUNK_BYTES = 64 * 1024


class DecodeBudget:
    """The decoded bytes a request may still produce; `take` refuses (413) past the cap."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise too_large(f"the request decodes to more than its {self.limit}-byte limit")


def inflate(decompressor: zlib._Decompress, data: bytes, budget: DecodeBudget) -> bytes:
    """Feed `data` to one zlib stream until its end or the end of the input, charging `budget`
    for every output byte as it comes (`max_length`), never holding more than the budget left."""
    out = bytearray()
    pending = data
    while not decompressor.eof:
        chunk = decompressor.decompress(pending, min(CHUNK_BYTES, budget.left + 1))
        budget.take(len(chunk))
        out += chunk
        pending = decompressor.unconsumed_tail
        if not chunk and not pending:
            break  # input used up before the stream's end: the caller says truncated
    return bytes(out)
