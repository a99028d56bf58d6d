"""``python -m nea.client``: the same as the ``nea-client`` command."""

from nea.client.cli import main

main()
