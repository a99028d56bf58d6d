"""The server's state: small objects that decide, with no sockets in sight.

`nea.server` feeds them parsed requests; `nea.core.bus` connects them to other
instances. Each object is tested on its own with fake peers and a fake clock.
"""
