"""The cluster: instances that share one Redis and behave as one server.

- `nea.cluster.names`: the Redis address, and the keys and channels of a cluster;
- `nea.cluster.envelope`: what instances publish to each other;
- `nea.cluster.members`: the table of live members;
- `nea.cluster.outstanding`: the deliveries still out at other instances;
- `nea.cluster.heartbeat`: the Redis commands of membership;
- `nea.cluster.redislink`: the connections to Redis, kept up through outages;
- `nea.cluster.redisproto`: txredisapi's command protocol, and all that relies on its insides;
- `nea.cluster.subscriber`: the connection subscribed to this instance's channels, and its reader;
- `nea.cluster.batch`: one PUBLISH per channel and reactor turn;
- `nea.cluster.redisbus`: `RedisBus`, the `nea.core.bus.Bus` built on all of the above;
- `nea.cluster.service`: wiring into the service tree.

docs/cluster.rst tells the whole design.
"""
