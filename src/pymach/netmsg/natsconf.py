"""NATS server configuration for netmsg: identities, permissions, topologies.

Pure functions: they build identities (nkeys) and the text of nats-server
configuration files. Nothing here opens a socket, starts a process or writes a
file; the caller writes the text (mode 0600: a leaf's file holds its seed) and
runs ``nats-server -c FILE`` (``nats-server -t -c FILE`` checks it).

The security model (docs/netmsg-deploy.md):

- one NATS account per user: accounts are isolated name spaces, so one user's
  proxies never see another user's subjects;
- one nkey user per (account, host): a proxy proves who it is by signing the
  server's challenge; no password is stored anywhere;
- per-host subject permissions: host H's proxy may subscribe only to
  ``pm.H.>``, ``pm.names.>`` and ``_INBOX.H.>`` (so no host can receive for
  another's ports or read another's replies) and publish to ``pm.*.in.>``,
  ``pm.*.ctl`` and ``pm.names.>``; it may publish to a reply subject only in
  answer to a request it was given (``allow_responses``), so it cannot forge
  a reply into another host's inbox;
- the hub enforces the same subjects on each host's leaf connection, so a
  host that rewrites its own leaf server still receives only its own
  subjects;
- TLS with certificates both ways on every link between machines (leaf to
  hub, route to route); clients reach their own host's server on loopback.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = [
    "Account", "Identity", "NkeysUnavailable", "TLSFiles", "check_host", "cluster_config",
    "host_permissions", "hub_config", "leaf_config", "leaf_permissions", "local_config",
    "new_account", "new_user", "render", "tls_block",
]

SUBJECT_ROOT = "pm"
# host names go into subjects: one token, no wildcard, no separator
_HOST_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")

Conf = Mapping[str, Any]
Listen = tuple[str, int]


class NkeysUnavailable(RuntimeError):
    """The ``nkeys`` package (the ``net`` extra) is needed to make identities."""


@dataclass(frozen=True)
class Identity:
    """An nkey user: ``seed`` (secret: it signs the server's challenge) and
    ``public_key`` (what a server's configuration lists)."""

    host: str
    seed: str
    public_key: str

    def __repr__(self) -> str:
        return f"Identity(host={self.host!r}, public_key={self.public_key!r}, seed=<secret>)"


@dataclass(frozen=True)
class Account:
    """A NATS account, one per user: its name in the configuration and an
    account nkey (kept so that a deployment can move to signed JWTs, where an
    account is named by its public key)."""

    name: str
    public_key: str


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a PEM certificate, its private key and the CA that signs peers."""

    cert: str
    key: str
    ca: str


def _nkeys() -> ModuleType:
    try:
        return importlib.import_module("nkeys")
    except ImportError as exc:
        raise NkeysUnavailable(
            "netmsg identities are nkeys and need the nkeys package: pip install 'pymach[net]'"
        ) from exc


def _new_key(prefix_name: str) -> tuple[str, str]:
    nk = _nkeys()
    seed = nk.encode_seed(os.urandom(32), getattr(nk, prefix_name))
    pair = nk.from_seed(bytearray(seed))
    try:
        return bytes(seed).decode("ascii"), bytes(pair.public_key).decode("ascii")
    finally:
        pair.wipe()


def check_host(host: str) -> str:
    """Return ``host`` if it can be a subject token; else raise ValueError."""
    if not isinstance(host, str) or not _HOST_RE.match(host):
        raise ValueError(f"host name {host!r}: use 1-64 of A-Z a-z 0-9 _ - (it is a NATS subject token)")
    return host


def _check_account(name: str) -> str:
    if not isinstance(name, str) or not _ACCOUNT_RE.match(name) or name.startswith("$"):
        raise ValueError(f"account name {name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return name


def new_user(host: str) -> Identity:
    """A new nkey user for ``host``'s proxy (or its leaf connection).

    Raises NkeysUnavailable without the nkeys package, ValueError for a host
    name that cannot be a subject token."""
    check_host(host)
    seed, public = _new_key("PREFIX_BYTE_USER")
    return Identity(host=host, seed=seed, public_key=public)


def new_account(name: str | None = None) -> Account:
    """A new account, by default named after the user running this (one
    account per user)."""
    if name is None:
        name = os.environ.get("USER") or f"uid{os.getuid()}"
    _check_account(name)
    _, public = _new_key("PREFIX_BYTE_ACCOUNT")
    return Account(name=name, public_key=public)


# what a proxy sends to other hosts: frames to a host's ports (pm.H.in, the
# proxy's one subject, and pm.H.in.> kept for per-port subjects), control,
# look-ups by host (pm.H.lookup) and the name service's "*" look-ups
_TO_HOSTS = [f"{SUBJECT_ROOT}.*.in", f"{SUBJECT_ROOT}.*.in.>", f"{SUBJECT_ROOT}.*.ctl", f"{SUBJECT_ROOT}.*.lookup",
             f"{SUBJECT_ROOT}.names.>"]


def host_permissions(host: str) -> dict[str, Any]:
    """The permissions of ``host``'s proxy user on its own server.

    It receives only its own host's subjects, the name service and its own
    inbox; it sends to any host's ports and control subject and to the name
    service, and to a reply subject only once, in answer to a request it
    received (``allow_responses``)."""
    check_host(host)
    return {
        "publish": {"allow": _TO_HOSTS},
        "subscribe": {"allow": [f"{SUBJECT_ROOT}.{host}.>", f"{SUBJECT_ROOT}.names.>", f"_INBOX.{host}.>"]},
        "allow_responses": {"max": 1, "expires": "1m"},
    }


def leaf_permissions(host: str) -> dict[str, Any]:
    """The permissions the hub gives ``host``'s leaf connection.

    For a leaf connection, what it may publish is what flows from the leaf
    into the hub, and what it may subscribe to is all the hub ever sends it.
    The hub does not track responses on leaf connections, so replies are let
    through by subject (``_INBOX.*.>``); the host's own server refuses forged
    replies from its proxy (host_permissions)."""
    check_host(host)
    return {
        "publish": {"allow": [*_TO_HOSTS, "_INBOX.*.>"]},
        "subscribe": {"allow": [f"{SUBJECT_ROOT}.{host}.>", f"{SUBJECT_ROOT}.names.>", f"_INBOX.{host}.>"]},
    }


def tls_block(cert: str, key: str, ca: str, verify: bool = True, timeout: float = 2.0) -> dict[str, Any]:
    """A ``tls {}`` block: this side's certificate and key, the CA it trusts
    and, with ``verify``, a certificate required from the other side."""
    block: dict[str, Any] = {"cert_file": cert, "key_file": key, "ca_file": ca, "timeout": timeout}
    if verify:
        block["verify"] = True
    return block


# -- rendering ---------------------------------------------------------------

def _value(v: Any, indent: int) -> str:
    pad = "  " * indent
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        inner = "\n".join(f"{pad}  {json.dumps(str(k))}: {_value(x, indent + 1)}" for k, x in v.items())
        return "{\n" + inner + "\n" + pad + "}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        inner = ",\n".join(f"{pad}  {_value(x, indent + 1)}" for x in v)
        return "[\n" + inner + "\n" + pad + "]"
    raise TypeError(f"cannot render {type(v).__name__} in a NATS configuration")


def render(conf: Conf, comment: str = "") -> str:
    """The text of a nats-server configuration file for ``conf`` (strings
    quoted, maps and lists as nats-server reads them)."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    body = "\n".join(f"{json.dumps(str(k))}: {_value(v, 0)}" for k, v in conf.items())
    return head + body + "\n"


def _listen(listen: Listen) -> str:
    host, port = listen
    if not 0 <= port < 65536:
        raise ValueError(f"port {port} out of range")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _common(server_name: str, client: Listen, http: Listen | None, max_payload: int | None,
            ping_interval: str, ping_max: int) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "server_name": server_name,
        "listen": _listen(client),
        "ping_interval": ping_interval,
        "ping_max": ping_max,
    }
    if http is not None:
        conf["http"] = _listen(http)
    if max_payload is not None:
        conf["max_payload"] = max_payload
    return conf


def _accounts(users: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """accounts {NAME: {users: [{nkey, permissions}...]}} from account name ->
    host -> that host's proxy user public key."""
    out: dict[str, Any] = {}
    for account, hosts in users.items():
        _check_account(account)
        out[account] = {"users": [{"nkey": public, "permissions": host_permissions(host)}
                                  for host, public in hosts.items()]}
    return out


def local_config(host: str, client: Listen, users: Mapping[str, str], *, server_name: str | None = None,
                 http: Listen | None = None, max_payload: int | None = None) -> str:
    """A single-host server (the embedded default): ``users`` maps account
    name -> the public key of ``host``'s proxy user in that account."""
    check_host(host)
    conf = _common(server_name or f"pm-{host}", client, http, max_payload, "2m", 2)
    conf["accounts"] = _accounts({a: {host: pub} for a, pub in users.items()})
    return render(conf, f"pymach netmsg: single-host server for {host}")


def hub_config(*, leaf_listen: Listen, tls: TLSFiles, leaves: Mapping[str, Mapping[str, str]],
               client: Listen = ("127.0.0.1", 4222), http: Listen | None = None, server_name: str = "pm-hub",
               max_payload: int | None = None, ping_interval: str = "1s", ping_max: int = 2) -> str:
    """The hub: it accepts leaf connections over TLS (a client certificate
    required), each authenticated by the nkey of one (account, host) and
    bound to that account with that host's subjects.

    ``leaves`` maps account name -> host -> public key of that host's leaf
    user in that account. The hub has no client users of its own: its client
    port (``client``) refuses everyone: the leaf users may connect only as
    leaf nodes (``allowed_connection_types``)."""
    accounts: dict[str, Any] = {}
    for account, hosts in leaves.items():
        _check_account(account)
        # leaf connections authenticate as the accounts' users: the user's
        # permissions filter what crosses that leaf connection
        accounts[account] = {"users": [
            {"nkey": public, "permissions": leaf_permissions(host), "allowed_connection_types": ["LEAFNODE"]}
            for host, public in hosts.items()]}
    conf = _common(server_name, client, http, max_payload, ping_interval, ping_max)
    conf["accounts"] = accounts
    conf["leafnodes"] = {
        "listen": _listen(leaf_listen),
        "tls": tls_block(tls.cert, tls.key, tls.ca, verify=True),
    }
    return render(conf, "pymach netmsg: hub; each host's leaf server connects here over TLS")


def leaf_config(*, host: str, hub_urls: Sequence[str], tls: TLSFiles, users: Mapping[str, str],
                uplinks: Mapping[str, Identity], client: Listen = ("127.0.0.1", 4222), http: Listen | None = None,
                server_name: str | None = None, max_payload: int | None = None, ping_interval: str = "1s",
                ping_max: int = 2, reconnect: str = "1s") -> str:
    """``host``'s leaf server: its proxies connect to it on ``client``
    (loopback), and it joins the hub once per account over TLS with that
    account's leaf identity.

    ``users`` maps account -> public key of ``host``'s proxy user;
    ``uplinks`` maps account -> the leaf Identity (with its seed: the file
    is a secret, write it 0600) the hub knows for (account, host)."""
    check_host(host)
    if set(users) != set(uplinks):
        raise ValueError("leaf_config: users and uplinks must name the same accounts")
    for url in hub_urls:
        if not url.startswith(("tls://", "nats-leaf://", "nats://")):
            raise ValueError(f"hub url {url!r}: expected tls://HOST:PORT")
    remotes = []
    for account, ident in uplinks.items():
        if ident.host != host:
            raise ValueError(f"uplink identity for {account!r} belongs to {ident.host!r}, not {host!r}")
        remotes.append({
            "urls": list(hub_urls),
            "account": account,
            "nkey": ident.seed,
            "tls": tls_block(tls.cert, tls.key, tls.ca, verify=False),
        })
    conf = _common(server_name or f"pm-{host}", client, http, max_payload, ping_interval, ping_max)
    conf["accounts"] = _accounts({a: {host: pub} for a, pub in users.items()})
    conf["leafnodes"] = {"reconnect": reconnect, "remotes": remotes}
    return render(conf, f"pymach netmsg: leaf server of host {host} (holds seeds: keep it 0600)")


def cluster_config(*, host: str, cluster_listen: Listen, routes: Sequence[str], tls: TLSFiles,
                   users: Mapping[str, Mapping[str, str]], client: Listen = ("127.0.0.1", 4222),
                   http: Listen | None = None, cluster_name: str = "pm", max_payload: int | None = None,
                   ping_interval: str = "1s", ping_max: int = 2) -> str:
    """One node of a cluster: every host runs a node, routes join them over
    TLS with certificates required both ways, and each host's proxy talks to
    its own node on ``client``.

    ``users`` maps account -> host -> public key of that host's proxy user:
    every node lists every host's users (each with its host's subjects), so
    a proxy is held to its subjects on whichever node it reaches."""
    check_host(host)
    for url in routes:
        if not url.startswith(("tls://", "nats-route://", "nats://")):
            raise ValueError(f"route url {url!r}: expected tls://HOST:PORT")
    conf = _common(f"pm-{host}", client, http, max_payload, ping_interval, ping_max)
    conf["accounts"] = _accounts(users)
    conf["cluster"] = {
        "name": cluster_name,
        "listen": _listen(cluster_listen),
        "routes": list(routes),
        "tls": tls_block(tls.cert, tls.key, tls.ca, verify=True),
    }
    return render(conf, f"pymach netmsg: cluster node of host {host}")
