"""The load test's clients: nea-client's `RelayClient`, tallied for a worker.

Each load-test client is one `nea.client.relay.RelayClient` (the same state
machine as ``nea-client relay``) for one unique text X, dialled through
`nea.loadtest.dialler`. What is particular to the load test lives here:
`Tallying`, the one observer a worker's clients share, which turns their
reports into the worker's `Tally`.
"""

from collections.abc import Callable

from nea.client.relay import RelayClient, RelayObserver
from nea.loadtest.tally import Tally
from nea.wire.backoff import Backoff

#: Between a client's tries: 0.1 s doubled per retry, at most 2 s, jittered down to half.
BACKOFF = Backoff(initial=0.1, maximum=2.0, jitter=0.5)


class Tallying(RelayObserver):
    """What the clients of one worker share: the tally, and how many are active or retrying."""

    def __init__(self, tally: Tally, wall: Callable[[], float]) -> None:
        self.tally = tally
        self.wall = wall
        self.active = 0  # clients started and not yet finished
        self.retrying = 0  # active clients past their first try

    def start(self, client: RelayClient) -> None:
        self.active += 1
        self.tally.count("started")
        client.start()

    def on_connected(self, client: RelayClient) -> None:
        self.tally.sample("connect_ms", client.sent_at - client.dialled_at)

    def on_acked(self, client: RelayClient) -> None:
        assert client.acked_at is not None  # set by RelayClient before it reports
        self.tally.sample("exchange_ms", client.acked_at - client.sent_at)

    def on_retry(self, client: RelayClient, why: str, delay: float) -> None:
        self.tally.count("retries")
        if client.retries == 1:
            self.retrying += 1

    def on_error(self, client: RelayClient, error) -> None:
        self.tally.errors[error.code] += 1

    def on_attempt_over(self, client: RelayClient, ending: str) -> None:
        self.tally.closed(ending)

    def on_finished(self, client: RelayClient) -> None:
        tally = self.tally
        self.active -= 1
        if client.retries:
            self.retrying -= 1
        counts = tally.counts
        counts["attempts"] += client.dials
        counts["forwarded"] += client.forwarded
        counts["oks_sent"] += client.oks_sent
        counts["unexpected"] += client.unexpected
        if client.outcome == "acked":
            tally.count("acked")
            if client.retries == 0:
                tally.count("acked_first_try")
            assert client.acked_at is not None and client.started_at is not None
            tally.sample("total_ms", client.acked_at - client.started_at)
        else:
            tally.count("failed")
        wall = self.wall()
        tally.span(wall - (client.clock.seconds() - client.started_at), wall)
