"""Introspection, under the name pymach's package, its tools and its
harnesses know it by: the answers are the kernel's
(pymach._kern.introspect) and the transport is pymach._linux.introspect."""

from __future__ import annotations

from .._kern.introspect import address, held_fds, ports, query, regions, start

__all__ = ["address", "held_fds", "ports", "query", "regions", "start"]
