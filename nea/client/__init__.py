"""nea-client: an interactive client, the seed-004 relay client, and a status query.

The pieces are reusable without the command line: `nea.client.relay.RelayClient`
(one relay-mode client, also what nea-loadtest runs by the thousand),
`nea.client.interactive.InteractiveClient` and `nea.client.status.fetch_status`.
"""
