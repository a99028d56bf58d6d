"""Start-up failures told in one line: what failed, where, and what to do."""


class StartupError(SystemExit):
    """The daemon cannot start; the message is all an operator needs.

    A SystemExit, because twistd and twist (and Python itself) print an uncaught
    SystemExit's message as it is and exit with status 1, where any other
    exception would print a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"nea-server: {message}")
