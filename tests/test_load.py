"""pymach under load, as real processes: many clients at once against a
service and against the bootstrap server, send right churn, many ports in
one task and a space that runs out of fds, senders blocked on a full
queue, and a short soak.

Every run happens in a fork child (run_in_child), which starts its own
bootstrap server on a private socket and forks the clients, so this
process's fds and environment are left as they were. The full-scale runs
(1,000 clients, 10-minute soak) are ``python -m stress.load``
commands; here the client runs use 200 processes.
"""

from __future__ import annotations

import os
import resource

import pytest

import pymach.mach as M
from stress import load as L
from procutil import run_in_child

NOBODY = 65534
CLIENTS = 200


def test_clients_against_one_service() -> None:
    """200 client processes, all connected at once, each with its own reply
    port: every reply is the right one, and the server's fds go back to
    their baseline once the clients are gone."""
    (run,) = run_in_child(lambda: L.clients(CLIENTS, 10, ("service",), timeout=120))
    run.check()
    assert not run.notes, run.notes
    assert run.requests == CLIENTS * 10 and run.bad == 0
    # each client's channel is two fds of the server's: all were connected together
    assert run.server_fds_connected >= run.server_fds_baseline + 2 * CLIENTS
    assert run.server_fds_after <= run.server_fds_baseline
    assert run.served == CLIENTS * 11


def test_clients_against_the_bootstrap_server() -> None:
    """200 client processes doing bootstrap_look_up at once: each right is
    the server's own connection to the service named (its inode), an
    unknown name is BOOTSTRAP_UNKNOWN_SERVICE, and the server's fds go back."""
    (run,) = run_in_child(lambda: L.clients(CLIENTS, 10, ("bootstrap",), timeout=120))
    run.check()
    assert run.requests == CLIENTS * 10 and run.bad == 0
    assert run.server_fds_connected >= run.server_fds_baseline + 2 * CLIENTS
    assert run.server_fds_after <= run.server_fds_baseline


def test_a_client_run_fails_on_a_server_fd_more_or_a_bad_reply() -> None:
    ok = L.ClientRun("t", 2, 3, requests=6, server_fds_baseline=10, server_fds_after=10)
    ok.check()
    L.ClientRun("t", 2, 3, requests=6, server_fds_baseline=10, server_fds_after=9).check()  # fewer: closed
    for bad in (dict(server_fds_after=11), dict(bad=1), dict(failed=1), dict(requests=5)):
        with pytest.raises(L.CheckFailed):
            L.ClientRun(**{**ok.__dict__, **bad}).check()  # type: ignore[arg-type]


def test_send_right_churn() -> None:
    """100,000 MAKE_SEND / deallocate cycles, and 10,000 more with a
    no-senders request armed each time (a connection each, and a
    notification): no fd more, RSS within 256 KiB."""
    plain, armed = run_in_child(lambda: (L.churn(100_000), L.churn_no_senders(10_000)))
    for r in (plain, armed):
        r.check()
        assert r.fds[0] == r.fds[1]


def test_ten_thousand_ports() -> None:
    """10,000 receive rights in one task: one fd each; mach_port_names
    lists them with their type; destroying them all gives every fd back."""
    run = run_in_child(lambda: L.ports(10_000))
    assert run.fds_full - run.fds_baseline == 10_000
    assert run.fds_after == run.fds_baseline


def test_ports_with_send_rights() -> None:
    run = run_in_child(lambda: L.ports(2_000, send=True))
    assert run.fds_full > run.fds_baseline + 2_000
    assert run.fds_after == run.fds_baseline


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_ten_thousand_ports_as_a_user_with_a_low_soft_limit() -> None:
    """A user whose soft RLIMIT_NOFILE is 1,024: the run raises it to the
    hard limit and the 10,000 ports fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 10_100:
        pytest.skip(f"the hard RLIMIT_NOFILE is {hard}")

    def child() -> tuple[int, int, int]:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        run = L.ports(10_000)
        return run.fds_baseline, run.fds_full, run.fds_after

    base, full, after = run_in_child(child)
    assert full - base == 10_000 and after == base


def test_hard_limit_too_low_is_a_clear_error() -> None:
    """A hard limit below what the run needs: refused up front, by name."""
    def child() -> str:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
        try:
            L.ports(10_000)
        except L.CheckFailed as e:
            return str(e)
        return "no error"

    assert "RLIMIT_NOFILE hard limit 512" in run_in_child(child)


def test_a_full_space_gives_kern_no_space_and_leaks_nothing() -> None:
    """Out of fds, mach_port_allocate, mach_port_construct and Port()
    give KERN_NO_SPACE (XNU's code for a space whose table is at its
    limit) and insert_right MAKE_SEND does too; none crashes or leaves an
    fd behind, and a port destroyed makes room again."""
    kr, kr_send, made, leaked = run_in_child(L.exhaust)
    assert kr == M.KERN_NO_SPACE, hex(kr)
    assert kr_send == M.KERN_NO_SPACE, hex(kr_send)
    assert made >= 40
    assert leaked == 0


def test_senders_blocked_at_qlimit() -> None:
    """Six sender processes blocked on a queue of four; a sender with
    MACH_SEND_TIMEOUT gets MACH_SEND_TIMED_OUT; raising the qlimit wakes
    blocked senders; every message arrives once, in order per sender."""
    run = run_in_child(lambda: L.qlimit(6, 40, 4))
    assert run.blocked_at_full == 6 and run.queued_at_full == 4
    assert run.timed_out == 3
    assert run.queued_after_raise >= 10
    assert run.received == 240


def test_a_short_soak() -> None:
    """Six seconds of the soak's mix: every reply right, no process failed,
    every process sampled."""
    run = run_in_child(lambda: L.soak(minutes=0.1, interval=1.0, wave=4))
    assert run.bad == 0 and run.failed == 0
    assert run.requests > 0 and run.waves > 0
    assert set(run.samples) == {"bootstrap server", "echo server", "steady client", "churn worker", "load (this)"}
    assert all(len(rows) >= 5 for rows in run.samples.values())


def test_soak_verdict_flags_growth() -> None:
    """The verdict sees growth in the last quarter, and only there."""
    flat = [(float(t), 20_000, 30) for t in range(8)]
    grows = flat[:6] + [(6.0, 40_000, 30), (7.0, 40_000, 90)]
    v = L.SoakRun({"flat": flat, "grows": grows}).verdicts()
    assert v["flat"] == ""
    assert "RSS 20000 -> 40000" in v["grows"] and "fds 30 -> 90" in v["grows"]


def test_channels_a_port_accepts_follow_the_fd_limit() -> None:
    """A port accepts a quarter of RLIMIT_NOFILE senders' channels (two
    fds each), at least 1024: 1,100 clients of one service fit under a
    limit of 20,000 (the ``clients --clients 1100`` command runs them)."""
    from pymach._kern.ipc_port import max_joined

    def child() -> tuple[int, int]:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        low = max_joined()
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))
        return low, max_joined()

    low, high = run_in_child(child)
    assert low == 1024
    assert high == max(1024, min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 20_000) // 4)
