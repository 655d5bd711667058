"""pymach's netmsg service: ports across hosts, with NATS as the network.

- ``wire``: the frames the proxies send each other (pure struct code);
- ``server``: an embedded nats-server for one machine, or the URL of one;
- ``proxy``: the per-host proxy (``pymach netmsg serve``): local proxy
  ports for remote ports, forwarding, sequence numbers, credits, dead
  names and no-senders across hosts;
- ``netname``: the network name service the proxy answers (Mach's
  netname.defs);
- ``natsconf``: NATS server configurations for several hosts: nkey
  identities, per-host subject permissions, TLS, hub and leaves, clusters
  (docs/netmsg-deploy.md).

Only this package and the ``pymach netmsg`` command import nats (the
``net`` extra); the rest of pymach works without it.
"""
