"""nea: a Twisted messaging daemon with date pushes, reverse, acknowledged relays and chat."""

__version__ = "0.1.0"
