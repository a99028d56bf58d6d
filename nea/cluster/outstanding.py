"""What this instance has sent to other instances and not yet heard back about."""


class Outstanding:
    """Deliveries this instance originated and published to other instances, unanswered.

    A delivery is answered when its confirmation or re-forward comes back. When the instance it
    went to is gone, whatever it still had can only be recovered here: the origin
    draws new targets for it (a kill -9 sends no re-forward).
    """

    def __init__(self) -> None:
        self._sent: dict[str, dict[str, int]] = {}
        self._count = 0  # kept, not summed: zero state is asked at every heartbeat and status read

    def add(self, name: str, relay: str) -> None:
        relays = self._sent.get(name)
        if relays is None:
            relays = self._sent[name] = {}
        relays[relay] = relays.get(relay, 0) + 1
        self._count += 1

    def answered(self, name: str, relay: str) -> None:
        relays = self._sent.get(name)
        if relays is None or relay not in relays:
            return  # already recovered when the member was given up
        relays[relay] -= 1
        self._count -= 1
        if not relays[relay]:
            del relays[relay]
            if not relays:
                del self._sent[name]

    def take(self, name: str) -> list[str]:
        """Everything still out at ``name`` (repeated as often as it was sent), forgotten."""
        taken = [relay for relay, n in self._sent.pop(name, {}).items() for _ in range(n)]
        self._count -= len(taken)
        return taken

    def instances(self) -> list[str]:
        return list(self._sent)

    def __len__(self) -> int:
        return self._count
