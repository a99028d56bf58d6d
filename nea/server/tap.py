"""The module twistd loads for ``nea-server`` (see twisted/plugins/nea_plugin.py)."""

from nea.server.options import Options
from nea.server.service import makeService

__all__ = ["Options", "makeService"]
