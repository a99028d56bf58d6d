from twisted.application.service import ServiceMaker

nea_server = ServiceMaker(
    "nea-server",
    "nea.server.tap",
    "A TLS messaging daemon: dates, reverse, relays, chat.",
    "nea-server",
)
