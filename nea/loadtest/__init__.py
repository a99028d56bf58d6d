"""nea-loadtest: the seed-004 load test as a product feature (SPEC section 8).

N relay-mode clients start at random moments over a window, each sending
``message X`` and waiting for ``ok X`` while answering what is forwarded to it.
A run checks that nothing was lost and that the server ends in zero state.

Modules: `delays` (ok-delay distributions), `client` (one client's relay
exchange, with retries), `tally` (counters and latency samples), `worker` (one
process's share of the clients), `status` (the zero-state check), `report`
(summary and JSON), `cli` (the command, which spawns the workers).
"""
