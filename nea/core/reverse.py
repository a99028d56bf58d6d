"""Reversing text the way a reader would: by user-perceived characters.

Reversing code points would detach combining accents from their letters and split
flags and skin-toned emoji; grapheme clusters (Unicode UAX #29, via ``regex``'s
``\\X``) keep them whole.
"""

import regex

from nea.core.dispatch import Handler
from nea.wire import frames

_GRAPHEME = regex.compile(r"\X")


def reverse_text(text: str) -> str:
    if text.isascii():
        return text[::-1]
    return "".join(reversed(_GRAPHEME.findall(text)))


def handlers() -> dict[type, Handler]:
    """A line that is no verb, in the nea profile (`nea.core.dispatch`)."""
    return {frames.Reverse: lambda peer, r: peer.push(frames.ReverseReply(reverse_text(r.text)))}
