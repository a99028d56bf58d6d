"""Stable error codes sent to clients.

A code never changes meaning once released; clients and operators match on it.
Each code says whether it is a limit violation, after which the server closes the
connection; every other error leaves the connection up.
"""

import attrs


@attrs.frozen
class ErrorCode:
    code: str
    fatal: bool
    summary: str


BAD_JSON = ErrorCode("bad_json", False, "the line starts with '{' but is not a JSON object")
UNKNOWN_TYPE = ErrorCode("unknown_type", False, "the JSON frame names no kind nea knows")
BAD_PAYLOAD = ErrorCode("bad_payload", False, "the JSON frame's payload has the wrong shape")
EMPTY_RELAY = ErrorCode("empty_relay", False, "'message' needs a non-empty text")
EMPTY_CHAT = ErrorCode("empty_chat", False, "'chat' needs a non-empty text")
BAD_NICK = ErrorCode("bad_nick", False, "a nick is 1-32 letters, digits, '_', '.' or '-'")
BAD_UTF8 = ErrorCode("bad_utf8", False, "the line is not valid UTF-8")
UNEXPECTED_OK = ErrorCode("unexpected_ok", False, "nobody waits for this 'ok'")
NOT_IN_PROFILE = ErrorCode("not_in_profile", False, "this listener's profile does not offer that")
NO_RECIPIENT = ErrorCode("no_recipient", False, "no connection can take a relay right now")
TOO_MANY_PENDING = ErrorCode(
    "too_many_pending", False, "this connection already waits for as many answers as it may"
)
BAD_USAGE = ErrorCode("bad_usage", False, "the verb's arguments are missing or malformed")
BAD_NAME = ErrorCode(
    "bad_name",
    False,
    "a name or service is 1-64 letters, digits, '_', '.', ':', '-' or '@', not starting with '@'",
)
TOO_MANY_SERVICES = ErrorCode(
    "too_many_services", False, "this connection already serves as many services as it may"
)
NO_SUCH_CLIENT = ErrorCode("no_such_client", False, "no client is registered under that name")
NO_MEMBER = ErrorCode("no_member", False, "the service has no member that can take the request")
CLIENT_GONE = ErrorCode("client_gone", False, "the client left before replying")
REQUEST_TIMEOUT = ErrorCode("request_timeout", False, "no reply came back in time")
UNEXPECTED_REPLY = ErrorCode("unexpected_reply", False, "nobody waits for this 'reply'")
NAME_TAKEN_OVER = ErrorCode(
    "name_taken_over", True, "a newer connection registered your name (on some instance)"
)
LINE_TOO_LONG = ErrorCode("line_too_long", True, "the line is longer than the server's limit")
SERVER_FULL = ErrorCode("server_full", True, "the server has reached its maximum number of clients")
SLOW_CONSUMER = ErrorCode(
    "slow_consumer", True, "the client stopped reading and its buffer is full"
)
SHUTTING_DOWN = ErrorCode("shutting_down", True, "the server is shutting down")
# ---- identities and permissions ----
NOT_ALLOWED = ErrorCode("not_allowed", False, "not permitted")
AUTH_UNAVAILABLE = ErrorCode("auth_unavailable", False, "this server accepts no tokens")
BAD_TOKEN = ErrorCode("bad_token", False, "the token is no JWT nea can use (sub and exp needed)")
TOKEN_TOO_LARGE = ErrorCode("token_too_large", False, "the token is longer than 8 KiB")
BAD_SIGNATURE = ErrorCode("bad_signature", False, "the token's signature does not verify")
BAD_ALGORITHM = ErrorCode(
    "bad_algorithm", False, "the token is not signed with the server's algorithm"
)
EXPIRED_TOKEN = ErrorCode("expired_token", False, "the token presented has expired")
TOKEN_NOT_YET_VALID = ErrorCode("token_not_yet_valid", False, "the token is not valid yet")
WRONG_AUDIENCE = ErrorCode("wrong_audience", False, "the token is not meant for this server")
TOKEN_EXPIRED = ErrorCode(
    "token_expired", True, "the connection's token has expired and no fresh one came"
)
PING_TIMEOUT = ErrorCode(
    "ping_timeout", True, "the client sent nothing and answered no ping for too long"
)
# ---- chat history ----
BAD_HISTORY = ErrorCode(
    "bad_history", False, "'history N' and 'since ID' need an integer >= 0 (N at most 1000)"
)
HISTORY_UNAVAILABLE = ErrorCode(
    "history_unavailable", False, "chat history is off, or its store is unavailable right now"
)
HISTORY_BUSY = ErrorCode(
    "history_busy", False, "the history store is far behind: the line was not said; say it again"
)

ALL = (
    BAD_JSON,
    UNKNOWN_TYPE,
    BAD_PAYLOAD,
    EMPTY_RELAY,
    EMPTY_CHAT,
    BAD_NICK,
    BAD_UTF8,
    UNEXPECTED_OK,
    NOT_IN_PROFILE,
    NO_RECIPIENT,
    TOO_MANY_PENDING,
    BAD_USAGE,
    BAD_NAME,
    TOO_MANY_SERVICES,
    NO_SUCH_CLIENT,
    NO_MEMBER,
    CLIENT_GONE,
    REQUEST_TIMEOUT,
    UNEXPECTED_REPLY,
    NAME_TAKEN_OVER,
    LINE_TOO_LONG,
    SERVER_FULL,
    SLOW_CONSUMER,
    SHUTTING_DOWN,
    PING_TIMEOUT,
    BAD_HISTORY,
    HISTORY_UNAVAILABLE,
    HISTORY_BUSY,
    NOT_ALLOWED,
    AUTH_UNAVAILABLE,
    BAD_TOKEN,
    TOKEN_TOO_LARGE,
    BAD_SIGNATURE,
    BAD_ALGORITHM,
    EXPIRED_TOKEN,
    TOKEN_NOT_YET_VALID,
    WRONG_AUDIENCE,
    TOKEN_EXPIRED,
)
