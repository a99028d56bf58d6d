"""The pages in headless Chromium: the status page shows /status's figures and updates them
in place; Swagger UI renders the API from this server alone.

Chromium is driven over the DevTools protocol (``tests.infra.open_page``).
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.infra import open_page, poll
from tests.support import connect, start_server, tcp_listen
from tests.test_http_api import fetch_json

#: What the test reads off the page: every data-field element's text, the tables'
#: rows, and a marker set from outside that a reload would wipe (null until the page is there).
READ_PAGE = """(() => document.getElementById("updated") && ({
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


class PagesInChromium(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_figures_match_status_and_update_after_a_client_connects(self):
        service = yield start_server(self, "--listen", tcp_listen())
        page = yield open_page(self, f"http://127.0.0.1:{service.http_port}/?refresh=0.2")
        evaluate = page.evaluate

        def read():
            return evaluate(READ_PAGE)

        shown = yield poll(
            read, lambda v: v and v["fields"].get("instance") == "test", "first figures"
        )
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
        page = yield open_page(self, f"{origin}/docs")
        evaluate = page.evaluate
        _, spec = yield fetch_json(service.http_port, "/openapi.json")
        operations = sum(len(methods) for methods in spec["paths"].values())
        yield poll(
            lambda: evaluate("document.querySelectorAll('.opblock').length"),
            lambda count: count == operations,
            f"{operations} operations in Swagger UI",
        )
        fetched = yield evaluate("performance.getEntriesByType('resource').map(e => e.name)")
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
