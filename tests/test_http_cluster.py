"""The HTTP API of a cluster: two in-process instances on a real redis-server."""

from twisted.internet import defer
from twisted.trial import unittest

from nea.wire import frames
from tests import infra
from tests.support import connect, settle, start_server, tcp_listen
from tests.test_http_api import TOKEN, auto_ack, fetch_json, metrics, post_text


class ClusterOverHTTP(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield infra.redis_server(self)
        self.a = yield self.instance("a")
        self.b = yield self.instance("b")
        yield settle(
            lambda: all(
                len(s.hub.snapshot().cluster.members) == 2
                and s.hub.snapshot().cluster.state == "connected"
                for s in (self.a, self.b)
            )
        )

    def instance(self, name: str):
        return start_server(
            self,
            "--instance-id",
            name,
            "--listen",
            tcp_listen(),
            "--redis",
            self.redis.url,
            "--cluster-name",
            "httpapi",
            "--heartbeat",
            "0.5",
            "--admin-token",
            TOKEN,
            "--relay-timeout",
            "5",
        )

    @defer.inlineCallbacks
    def test_status_metrics_broadcast_and_relay_across_instances(self):
        code, status = yield fetch_json(self.a.http_port, "/status")
        self.assertEqual((code, status["cluster"]["state"]), (200, "connected"))
        self.assertEqual(sorted(m["instance"] for m in status["cluster"]["members"]), ["a", "b"])
        samples = yield metrics(self.a.http_port)
        self.assertEqual(samples["nea_cluster_members{}"], 2)
        self.assertEqual(samples['nea_cluster_state{state="connected"}'], 1)

        # The only client is on b; a's HTTP API reaches it, and gets its ok back.
        client = yield connect(self, self.b.ports[0], tls=False)
        yield settle(lambda: self.a.hub.snapshot().cluster.connections == 1)
        code, body = yield post_text(self.a.http_port, "/broadcast", "to the whole cluster")
        self.assertEqual((code, body["reached"]), (200, 0))
        self.assertEqual((yield client.next_push()), frames.BroadcastPush("to the whole cluster"))
        auto_ack(client)
        code, body = yield post_text(self.a.http_port, "/relay", "over redis")
        self.assertEqual((code, body["acked"]), (200, True))

    @defer.inlineCallbacks
    def test_redis_gone_is_degraded_but_healthy(self):
        yield self.redis.stop()
        yield settle(lambda: self.a.hub.bus.state() == "degraded")
        code, health = yield fetch_json(self.a.http_port, "/healthz")
        self.assertEqual((code, health["status"], health["cluster"]), (200, "serving", "degraded"))
        samples = yield metrics(self.a.http_port)
        self.assertEqual(samples['nea_cluster_state{state="degraded"}'], 1)
        self.assertEqual(samples['nea_cluster_state{state="connected"}'], 0)
