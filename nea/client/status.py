"""The status client: one connection, one ``{"cmd":"status"}``, one answer.

What ``nea-client status`` prints, what nea-loadtest judges zero state by, and
what the tests read a daemon's status with. No redialling here: someone asking
for the status wants to hear now whether the server answers.
"""

from twisted.internet import defer
from twisted.python.failure import Failure

from nea.client.link import LinkFactory, PushReader, ServerLink
from nea.client.redial import describe, describe_lost
from nea.tls.client import verification_failure
from nea.wire import frames

STATUS_LINE = b'{"cmd":"status"}\n'


class StatusError(Exception):
    """The status could not be had; the message says why, for a person."""

    def __init__(self, message: str, tls_refused: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        #: True when the server's certificate was refused (wrong CA or host name).
        self.tls_refused = tls_refused
        #: The server's error code when it answered with an error (e.g. not_in_profile).
        self.code = code


class _StatusQuery(PushReader):
    """The owner of one `ServerLink`: asks once, and settles ``result`` once."""

    def __init__(self, ca: str | None, until_closed: bool) -> None:
        self.ca = ca
        self.until_closed = until_closed
        #: The answer, kept until the connection is closed (``until_closed``).
        self.status: dict | None = None
        self.result: defer.Deferred = defer.Deferred()

    def link_made(self, link: ServerLink) -> None:
        self.result.addBoth(self._close, link)

    def link_ready(self, link: ServerLink) -> None:
        link.send_line(STATUS_LINE)

    def link_push(self, link: ServerLink, push: frames.Push) -> None:
        if isinstance(push, frames.StatusReply):
            if self.until_closed:
                self.status = push.status
                link.close("done")
            else:
                self.settle(push.status)
        elif isinstance(push, frames.ErrorReply):
            self.settle(
                Failure(
                    StatusError(f"the server refused: [{push.code}] {push.message}", code=push.code)
                )
            )

    def link_lost(self, link: ServerLink, reason: Failure) -> None:
        if self.status is not None:
            self.settle(self.status)
            return
        refused = verification_failure(reason, self.ca)
        why = refused or describe_lost(link, reason)
        self.settle(Failure(StatusError(f"no status: {why}", tls_refused=refused is not None)))

    def settle(self, outcome) -> None:
        if not self.result.called:
            if isinstance(outcome, Failure):
                self.result.errback(outcome)
            else:
                self.result.callback(outcome)

    @staticmethod
    def _close(result, link: ServerLink):
        link.close("done", abort=isinstance(result, Failure))
        return result


def fetch_status(
    endpoint,
    clock,
    tls: bool,
    timeout: float | None = 10.0,
    ca: str | None = None,
    until_closed: bool = False,
) -> defer.Deferred:
    """The server's status as a dict; fails with `StatusError` (or, after ``timeout``
    seconds unless it is None, `twisted.internet.defer.TimeoutError`) otherwise.

    ``ca`` is the CA file the endpoint trusts, named if the server's certificate is refused.
    With ``until_closed`` the status comes once the asking connection is closed on
    this side, so that a status asked next is less likely to count it.
    """
    query = _StatusQuery(ca, until_closed)

    def dial_failed(reason: Failure) -> None:
        query.settle(Failure(StatusError(f"cannot connect: {describe(reason)}")))

    endpoint.connect(LinkFactory(query, clock, tls)).addErrback(dial_failed)
    if timeout is not None:
        query.result.addTimeout(timeout, clock)
    return query.result
