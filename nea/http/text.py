"""The one body the mutating endpoints take: ``{"text": "..."}``, checked before it reaches clients.

A text goes out on the wire as (part of) one line, so it must be one line, in
valid Unicode, and short enough to stay under any client's line limit.
"""

from typing import Any

from twisted.web import http

from nea.http.jsonapi import ApiError

#: Longest text in characters (UTF-8 needs at most 4 bytes each: 16 KiB on the wire,
#: well under the default 64 KiB line limit).
MAX_TEXT_CHARS = 4096


def max_text_chars(max_line: int) -> int:
    """The longest text whose line fits in ``max_line`` bytes, verb included."""
    return max(1, min(MAX_TEXT_CHARS, (max_line - len("broadcast ")) // 4))


def _bad(message: str) -> ApiError:
    return ApiError(http.BAD_REQUEST, "bad_text", message)


def text_field(body: dict[str, Any], max_chars: int) -> str:
    """The body's ``text``, or a 400 `ApiError` that says what is wrong with it."""
    unknown = sorted(set(body) - {"text"})
    if unknown:
        raise ApiError(http.BAD_REQUEST, "bad_body", f"unknown field(s): {', '.join(unknown)}")
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise _bad("'text' must be a non-empty string")
    if "\n" in text or "\r" in text:
        raise _bad("'text' must be one line: no CR or LF")
    if len(text) > max_chars:
        raise _bad(f"'text' is longer than {max_chars} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("'text' holds an unpaired surrogate, which is not valid Unicode") from None
    return text
