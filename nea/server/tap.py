"""The module twistd and twist load for ``nea-server`` (see twisted/plugins/nea_plugin.py)."""

from twisted.python import usage

from nea.server import options
from nea.server.service import makeService
from nea.server.startup import StartupError

__all__ = ["Options", "makeService"]


class Options(options.Options):
    """The options as the command line parses them: a mistake is one line, not the help.

    twistd and twist answer a usage error with the whole ``--help`` text around
    it; the one line that matters gets lost in it.
    """

    def parseOptions(self, options=None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise StartupError(f"{e} (--help lists the options)") from None
