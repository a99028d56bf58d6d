"""The daemon: connections, listeners, and the service tree that twistd runs."""
