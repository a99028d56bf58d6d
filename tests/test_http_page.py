"""The pages in headless Chromium: the status page shows /status's figures and updates them
in place; Swagger UI renders the API from this server alone.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
it reads commands on its fd 3 and answers on fd 4, NUL-separated JSON), which the
reactor serves as two extra child file descriptors; no extra package is needed.
"""

import json
import shutil

from twisted.internet import defer, error, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from tests.support import WAIT, connect, next_tick, start_server, tcp_listen
from tests.test_http_api import fetch_json

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_COMMANDS, _ANSWERS = 3, 4

#: What the test reads off the page: every data-field element's text, the tables'
#: rows, and a marker set from outside that a reload would wipe.
READ_PAGE = """(() => ({
  fields: Object.fromEntries([...document.querySelectorAll("[data-field]")]
    .map(e => [e.dataset.field, e.textContent])),
  profiles: [...document.querySelectorAll("#profiles tr")]
    .map(tr => [...tr.children].map(td => td.textContent)),
  members: [...document.querySelectorAll("#members tr")].map(tr => tr.children[0].textContent),
  updated: document.getElementById("updated").textContent,
  members_wrap: [...document.querySelectorAll("#members td:first-child")]
    .map(td => getComputedStyle(td).overflowWrap),
  marker: window.neaTestMarker || null,
}))()"""


class DevTools(ProcessProtocol):
    """A headless Chromium and the DevTools calls made to it, each bounded by ``WAIT``."""

    def __init__(self) -> None:
        self._buffer = b""
        self._ids = iter(range(1, 1_000_000))
        self._calls: dict[int, defer.Deferred] = {}
        self.stderr = b""
        self.ended = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr = (self.stderr + data)[-4000:]
        if fd != _ANSWERS:
            return
        *messages, self._buffer = (self._buffer + data).split(b"\0")
        for message in messages:
            answer = json.loads(message)
            call = self._calls.pop(answer.get("id"), None)
            if call is None:
                continue  # an event; nothing here waits for those
            if "error" in answer:
                call.errback(RuntimeError(f"DevTools: {answer['error']}"))
            else:
                call.callback(answer["result"])

    def processEnded(self, reason) -> None:
        for call in self._calls.values():
            call.errback(RuntimeError(f"chromium ended: {self.stderr[-1000:]!r}"))
        self._calls.clear()
        self.ended.callback(None)

    def call(self, method: str, params: dict | None = None, session: str | None = None):
        number = next(self._ids)
        message = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._calls[number] = result = defer.Deferred()
        self.transport.writeToChild(_COMMANDS, json.dumps(message).encode() + b"\0")
        return result.addTimeout(WAIT, reactor)


def launch(testcase, url: str) -> DevTools:
    devtools = DevTools()
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--no-first-run", "--remote-debugging-pipe",
        f"--user-data-dir={testcase.mktemp()}", url,
    ]
    reactor.spawnProcess(devtools, CHROMIUM, args, env=None,
                         childFDs={0: "w", 1: "r", 2: "r", _COMMANDS: "w", _ANSWERS: "r"})
    testcase.addCleanup(close, devtools)
    return devtools


@defer.inlineCallbacks
def close(devtools: DevTools):
    if devtools.ended.called:
        return
    try:
        yield devtools.call("Browser.close")
    except Exception:
        pass
    try:
        yield devtools.ended.addTimeout(WAIT, reactor)
    except defer.TimeoutError:
        try:
            devtools.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        yield devtools.ended


@defer.inlineCallbacks
def poll(read, condition, what: str, tries: int = 600):
    """Read until ``condition(value)`` holds: at most ``tries`` reads, 0.05 s apart.

    Up to half a minute: Chromium starting on a loaded machine can take many seconds.
    """
    value = None
    for _ in range(tries):
        value = yield read()
        if condition(value):
            return value
        yield next_tick(0.05)
    raise AssertionError(f"{what}: not seen on the page; last read {value!r}")


class PagesInChromium(unittest.TestCase):
    timeout = 120

    def setUp(self):
        if CHROMIUM is None:
            raise unittest.SkipTest("no chromium binary (make system-packages installs it)")

    @defer.inlineCallbacks
    def open_page(self, url: str):
        """Chromium showing ``url``; returns a function evaluating JavaScript in that page."""
        devtools = launch(self, url)
        targets = yield poll(
            lambda: devtools.call("Target.getTargets"),
            lambda result: any(t["type"] == "page" for t in result["targetInfos"]),
            "a page target",
        )
        page = next(t for t in targets["targetInfos"] if t["type"] == "page")
        attached = yield devtools.call("Target.attachToTarget",
                                       {"targetId": page["targetId"], "flatten": True})

        @defer.inlineCallbacks
        def evaluate(expression: str):
            answer = yield devtools.call(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True},
                attached["sessionId"],
            )
            return answer["result"].get("value")

        return evaluate

    @defer.inlineCallbacks
    def test_figures_match_status_and_update_after_a_client_connects(self):
        service = yield start_server(self, "--listen", tcp_listen())
        evaluate = yield self.open_page(f"http://127.0.0.1:{service.http_port}/?refresh=0.2")

        def read():
            return evaluate(READ_PAGE)

        shown = yield poll(read, lambda v: v and v["fields"].get("instance") == "test", "first figures")
        _, status = yield fetch_json(service.http_port, "/status")
        self.assert_shows(shown, status)
        self.assertEqual(shown["fields"]["connections"], "0")
        self.assertEqual(shown["profiles"], [])

        yield evaluate("window.neaTestMarker = 'same page'")
        yield connect(self, service.ports[0], tls=False)
        shown = yield poll(read, lambda v: v["fields"]["connections"] == "1", "the new client")
        _, status = yield fetch_json(service.http_port, "/status")
        self.assertEqual(status["connections"], 1)
        # With a client subscribed, the date ticks move between the page's read and ours.
        self.assert_shows(shown, status, moving={"uptime", "dates.ticks"})
        self.assertEqual(shown["profiles"], [["nea", "1"]])
        self.assertEqual(shown["marker"], "same page", "the page reloaded instead of updating")

    @defer.inlineCallbacks
    def test_swagger_ui_renders_every_operation_from_this_server_alone(self):
        service = yield start_server(self, "--listen", tcp_listen())
        origin = f"http://127.0.0.1:{service.http_port}"
        evaluate = yield self.open_page(f"{origin}/docs")
        _, spec = yield fetch_json(service.http_port, "/openapi.json")
        operations = sum(len(methods) for methods in spec["paths"].values())
        yield poll(lambda: evaluate("document.querySelectorAll('.opblock').length"),
                   lambda count: count == operations, f"{operations} operations in Swagger UI")
        fetched = yield evaluate(
            "performance.getEntriesByType('resource').map(e => e.name)"
        )
        self.assertIn(f"{origin}/openapi.json", fetched)
        self.assertEqual([url for url in fetched if not url.startswith(origin + "/")], [])

    def assert_shows(self, shown: dict, status: dict, moving=frozenset({"uptime"})) -> None:
        """Every figure on the page but the ``moving`` ones equals the one in /status."""
        fields = shown["fields"]
        self.assertGreater(len(set(fields) - moving), 15)
        for path, text in fields.items():
            if path in moving:
                continue
            value = status
            for key in path.split("."):
                value = value[key]
            expected = str(value).lower() if isinstance(value, bool) else str(value)
            self.assertEqual(text, expected, path)
        self.assertEqual(shown["members"], [m["instance"] for m in status["cluster"]["members"]])
        self.assertRegex(shown["updated"], r"^\d\d:\d\d:\d\d UTC$")
        self.assertEqual(set(shown["members_wrap"]), {"anywhere"} if shown["members"] else set())
