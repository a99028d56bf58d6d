"""The HTTP API: status, health, metrics, connections, operator broadcast and relay, docs.

`nea.http.site` builds the resource tree and its listener; `nea.http.api` holds the
endpoints; the status page and Swagger UI's initializer are package data in ``static/``.
"""
