"""Keeping a secret out of text: whole, in any letter case, reversed, or any piece of it of 8+ characters.

An API, a proxy or a gateway that echoes the key it was sent rarely echoes it verbatim: upper-cased by a
framework, cut to fit a field, reversed by a buggy encoder. Replacing only the exact key lets all of those
through, into retry warnings, exception messages and Dagster metadata. So the text is matched against
every piece of ``MIN_PIECE`` characters of the secret and of its reverse, ignoring case, and every
stretch those pieces cover is replaced: any longer piece is a chain of overlapping such pieces, so it is
covered whole. A piece of 7 characters or fewer may stay: too short to narrow down a random key, and
matching shorter pieces would start to redact ordinary words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
#: The shortest piece of a secret that is redacted (the whole secret when it is shorter).
MIN_PIECE = 8


class Redactor:
    """Redacts the given secrets (and their pieces) from text and from decoded JSON."""

    def __init__(self, secrets: Iterable[str], min_piece: int = MIN_PIECE) -> None:
        pieces: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            size = min(min_piece, len(secret))
            for variant in (secret, secret[::-1]):
                # Case is left to the pattern (IGNORECASE); lower() only merges pieces that differ in case.
                pieces.update(variant[i : i + size].lower() for i in range(len(variant) - size + 1))
        self._pieces = frozenset(pieces)
        # A lookahead finds overlapping pieces too; longest first so the longer of two pieces at a spot counts.
        alternatives = "|".join(re.escape(p) for p in sorted(pieces, key=lambda p: (-len(p), p)))
        self._pattern = re.compile(f"(?=({alternatives}))", re.IGNORECASE) if pieces else None

    def __repr__(self) -> str:
        # Never the pieces: they are the secret.
        return "Redactor(...)"

    def leaks(self, text: str) -> bool:
        """Whether ``text`` holds the secret or any piece of it (any case, reversed)."""
        # Plain substring searches of the lowered text: many times faster than the pattern on a page of
        # hundreds of kilobytes, and every 2xx body is checked; the pattern only runs when this finds something.
        lowered = text.lower()
        return any(piece in lowered for piece in self._pieces)

    def redact(self, text: str) -> str:
        """``text`` with every stretch covered by a piece of a secret replaced by ``[redacted]``."""
        if self._pattern is None or not self.leaks(text):
            return text
        spans: list[list[int]] = []
        for match in self._pattern.finditer(text):
            start, end = match.start(1), match.end(1)
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(REDACTED)
            last = end
        out.append(text[last:])
        return "".join(out)

    def scrub(self, value: Any) -> Any:
        """Decoded JSON with every string (keys too) redacted; other values as they are."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if isinstance(value, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub(v) for k, v in value.items()}
        return value
