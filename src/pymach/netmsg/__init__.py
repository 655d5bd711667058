"""pymach netmsg: ports across hosts, on NATS."""
