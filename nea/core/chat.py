"""Chat and operator broadcasts: every chat-capable client of the cluster, exactly once.

The instance where a line is said delivers it to its own clients and publishes it
on the bus; other instances deliver what they receive from the bus. No instance
delivers its own publication twice, whether or not the bus is up.
"""

from nea.core.bus import Bus
from nea.core.peer import fan_out
from nea.core.registry import Registry
from nea.core.snapshot import ChatFigures
from nea.wire.frames import BroadcastPush, ChatPush


class ChatRoom:
    """The bus's chat node (`nea.core.bus.ChatNode`): the bus calls `fan_out` on it directly."""

    def __init__(self, registry: Registry, bus: Bus) -> None:
        self.registry = registry
        self.bus = bus
        self.said = 0
        self.broadcasts = 0

    def say(self, sender: str, text: str) -> int:
        """A client said ``text``; returns how many local clients got it."""
        self.said += 1
        return self._send(ChatPush(sender, text))

    def broadcast(self, text: str) -> int:
        """The operator says ``text`` to everyone; returns how many local clients got it."""
        self.broadcasts += 1
        return self._send(BroadcastPush(text))

    def _send(self, push: ChatPush | BroadcastPush) -> int:
        self.bus.publish(push)
        return self.fan_out(push)

    def fan_out(self, push: ChatPush | BroadcastPush) -> int:
        """Deliver ``push`` to this instance's chat clients; returns how many got it."""
        return fan_out(self.registry.chat_capable, push)

    def figures(self) -> ChatFigures:
        return ChatFigures(self.said, self.broadcasts)
