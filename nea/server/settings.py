"""The settings of one instance: nea-server's options as typed, frozen values, one per concern.

twistd hands `makeService` its parsed options (`nea.server.options.Options`, read by
string key); `Settings.from_options` turns them into these values once, and from
there on every part is given the value it needs, never the options themselves.
"""

from pathlib import Path

import attrs

from nea.cluster.batch import DEFAULT_BATCH_INTERVAL
from nea.cluster.names import RedisAddress
from nea.core.hub import HubConfig
from nea.core.permissions import Permissions, Policy, parse_policy
from nea.core.tokens import TokenVerifier
from nea.http.api import ApiSettings
from nea.http.limits import HttpLimits
from nea.http.site import HttpSettings
from nea.server.connection import ConnectionLimits
from nea.server.listeners import Listen, TlsPolicy
from nea.server.websocket import WebSocketSettings
from nea.wire import profiles


def read_policy(permissions: str | None, anonymous: Permissions | None) -> Policy:
    """The permissions ``--permissions`` and ``--anonymous`` give clients without a token.

    Raises OSError or ValueError (a SIGHUP then keeps the policy it had)."""
    if permissions is None:
        return Policy() if anonymous is None else Policy(anonymous)
    with open(permissions, encoding="utf-8") as file:
        return parse_policy(file.read(), anonymous)


@attrs.frozen
class ListenerSettings:
    """The client listeners and what they do before a connection reaches the hub."""

    listen: tuple[Listen, ...]
    #: Where missing development certificates are generated (resolved at start).
    dev_certs: Path
    backlog: int
    handshake_timeout: float
    max_handshakes: int
    keepalive: float
    max_clients_per_ip: int
    tls: TlsPolicy
    console: bool = False


@attrs.frozen
class ClusterSettings:
    """This instance's name, and the Redis cluster it joins (none: it is the whole server)."""

    instance_id: str
    redis: RedisAddress | None = None
    name: str = "nea"
    heartbeat: float = 1.0
    #: Least seconds between two PUBLISHes of messages to others (``--cluster-batch-interval``).
    batch_interval: float = DEFAULT_BATCH_INTERVAL


@attrs.frozen
class WorkerSettings:
    """Processes: how many workers serve (``--workers``, above 1 under a supervisor), and
    for a worker the listening sockets it adopts from its supervisor."""

    count: int = 1
    #: One per ``--listen`` in order, then ``--http``'s; None: bind the endpoints.
    inherited: tuple[int, ...] | None = None


@attrs.frozen
class StoreSettings:
    """Where chat history is kept (``--store``) and how much of it."""

    url: str
    #: Lines and bytes kept; 0: no bound.
    history_max: int = 0
    history_max_bytes: int = 0


@attrs.frozen
class AuthSettings:
    """Identities: the files a SIGHUP reads again, and the client token verifier."""

    permissions: str | None = None
    anonymous: Permissions | None = None
    tokens: TokenVerifier | None = None
    admin_token_file: str | None = None

    def read_policy(self) -> Policy:
        return read_policy(self.permissions, self.anonymous)


@attrs.frozen
class Settings:
    """Everything one instance is configured with."""

    listeners: ListenerSettings
    #: What every client connection may use.
    limits: ConnectionLimits
    hub: HubConfig
    #: WebSocket clients' settings for the nea profile; each listener sets its own profile.
    websocket: WebSocketSettings
    #: None: no HTTP API (``--http none``).
    http: HttpSettings | None
    store: StoreSettings
    cluster: ClusterSettings
    auth: AuthSettings
    drain_timeout: float
    workers: WorkerSettings = WorkerSettings()

    @classmethod
    def from_options(cls, config) -> "Settings":
        """The settings parsed nea-server options (``config``) give."""
        limits = ConnectionLimits(
            config["max-line"],
            config["max-outbound"],
            config["max-rate"],
            config["chat-rate"],
            config["chat-bytes-rate"],
        )
        http = None
        if config["http"] is not None:
            http = HttpSettings(
                config["http"],
                config["backlog"],
                ApiSettings(
                    config["admin-token"],
                    config["relay-timeout"],
                    config["max-line"],
                    config["tokens"] is not None,
                ),
                HttpLimits(
                    config["http-max-body"],
                    config["http-request-timeout"],
                    config["http-max-connections"],
                    config["http-idle-timeout"],
                    config["http-allowed-hosts"],
                    config["http-max-connections-per-ip"],
                ),
                config["http-access-log"],
            )
        return cls(
            listeners=ListenerSettings(
                tuple(config["listen"]),
                config["dev-certs"],
                config["backlog"],
                config["handshake-timeout"],
                config["max-handshakes"],
                config["keepalive"],
                config["max-clients-per-ip"],
                TlsPolicy(
                    Path(config["tls-client-ca"]) if config["tls-client-ca"] else None,
                    config["tls-client-cert"] == "required",
                    config["tls-min-version"],
                ),
                bool(config["console"]),
            ),
            limits=limits,
            hub=HubConfig(
                max_clients=config["max-clients"],
                date_interval=config["date-interval"],
                max_pending=config["max-pending"],
                ack_timeout=config["ack-timeout"],
                first_ack_timeout=config["first-ack-timeout"],
                ping_interval=config["ping-interval"],
                history_on_join=config["history-on-join"],
                policy=config["policy"],
            ),
            websocket=WebSocketSettings(
                profiles.NEA,
                limits,
                config["handshake-timeout"],
                tuple(config["ws-allowed-origins"] or ()),
                hosts=config["http-allowed-hosts"],
            ),
            http=http,
            store=StoreSettings(
                config["store"], config["history-max"], config["history-max-bytes"]
            ),
            cluster=ClusterSettings(
                config["instance-id"],
                config["redis"],
                config["cluster-name"],
                config["heartbeat"],
                config["cluster-batch-interval"],
            ),
            auth=AuthSettings(
                config["permissions"],
                config["anonymous"],
                config["tokens"],
                config["admin-token-file"],
            ),
            drain_timeout=config["drain-timeout"],
            workers=WorkerSettings(config["workers"], config["inherited-fds"]),
        )
