"""Listening, below every service that listens: endpoint strings, the backlog, failing
loudly at start-up in one line, and one log line per listener once it listens.

It knows Twisted endpoints and nothing of nea's profiles or protocol: `nea.server`
builds the client listeners on it, `nea.http` the HTTP API's. It imports only
`nea.tls` (to name OpenSSL's reason when an ``ssl:`` endpoint's files are wrong).
"""
