"""max_connections: its bound under the open-file limit, and how refusals are reported;
max_connecting_per_address: what counts as one host (its refusals: tests/e2e)."""

import asyncio
import errno
import logging
import resource

import pytest

from broker.connection_limit import (
    FD_RESERVE,
    LOG_INTERVAL,
    ConnectingPerHost,
    ConnectionLimit,
    host_of,
    quiet_accept_errors,
    usable_connections,
)


class OpenFiles:
    """RLIMIT_NOFILE as the process sees it: ``getrlimit``/``setrlimit`` of the module."""

    def __init__(self, soft: int, hard: int, *, may_raise: bool = True) -> None:
        self.soft, self.hard, self.may_raise = soft, hard, may_raise

    def getrlimit(self, _which: int) -> tuple[int, int]:
        return self.soft, self.hard

    def setrlimit(self, _which: int, limits: tuple[int, int]) -> None:
        if not self.may_raise:
            raise ValueError("not allowed")
        self.soft = limits[0]


@pytest.fixture
def open_files(monkeypatch: pytest.MonkeyPatch) -> OpenFiles:
    files = OpenFiles(1024, 4096)
    monkeypatch.setattr(resource, "getrlimit", files.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", files.setrlimit)
    return files


def test_the_soft_limit_is_raised_as_far_as_the_bound_needs(open_files: OpenFiles) -> None:
    assert usable_connections(1000) == 1000
    assert open_files.soft == 1000 + FD_RESERVE


def test_a_bound_the_hard_limit_cannot_hold_is_cut_and_said(
    open_files: OpenFiles, caplog: pytest.LogCaptureFixture
) -> None:
    assert usable_connections(100_000) == 4096 - FD_RESERVE
    assert open_files.soft == 4096
    assert f"open-file limit is 4096 (ulimit -n; {FD_RESERVE} kept" in caplog.text
    assert f"at most {4096 - FD_RESERVE} connections" in caplog.text


def test_a_limit_the_process_may_not_raise_is_kept(open_files: OpenFiles) -> None:
    open_files.may_raise = False
    assert usable_connections(100_000) == 1024 - FD_RESERVE
    assert open_files.soft == 1024


def test_a_small_limit_keeps_a_quarter_for_the_rest(open_files: OpenFiles) -> None:
    open_files.soft, open_files.may_raise = 200, False
    assert usable_connections(100_000) == 150
    assert usable_connections(100) == 100


def test_every_refusal_is_counted_and_logged_at_most_once_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.connection_limit")
    now, counted = [100.0], []
    limit = ConnectionLimit(3, lambda: counted.append(1), clock=lambda: now[0])
    for number in range(5):
        limit.refused(f"10.0.0.{number}")
    now[0] += LOG_INTERVAL
    limit.refused("10.0.0.9")
    assert len(counted) == 6
    assert [record.getMessage() for record in caplog.records] == [
        "max_connections (3) reached: 1 connection(s) closed before any TLS work, "
        "the last from 10.0.0.0",
        "max_connections (3) reached: 5 connection(s) closed before any TLS work, "
        "the last from 10.0.0.9",
    ]


def test_failed_accepts_are_one_plain_line_an_interval_and_the_rest_goes_on(
    open_files: OpenFiles, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncio's accept loop reports each connection it could not accept with a traceback.
    loop, now = asyncio.new_event_loop(), [0.0]
    try:
        quiet_accept_errors(loop, clock=lambda: now[0])
        out_of_files = OSError(errno.EMFILE, "Too many open files")
        for _ in range(3):
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": out_of_files}
            )
        loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    quiet, other = caplog.records
    assert quiet.getMessage() == (
        "1 connection(s) not accepted: Too many open files (open-file limit 1024, ulimit -n); "
        "accepting again in a moment"
    )
    assert quiet.exc_info is None
    assert (other.name, other.getMessage()) == ("asyncio", "something else")


def test_an_ipv6_host_is_its_slash_64_and_a_mapped_ipv4_its_address() -> None:
    assert host_of("192.0.2.7") == "192.0.2.7"
    assert host_of("2001:db8:1:2:aaaa::1") == host_of("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert host_of("2001:db8:1:3::1") != host_of("2001:db8:1:2::1")
    assert host_of("::ffff:192.0.2.7") == "192.0.2.7"


def test_a_host_s_slots_are_taken_refused_past_the_bound_and_given_back() -> None:
    counted: list[None] = []
    limit = ConnectingPerHost(2, lambda: counted.append(None))
    hosts = [limit.take(f"2001:db8::{n}") for n in range(3)]  # one /64: one host
    assert hosts == ["2001:db8::/64", "2001:db8::/64", None]
    assert len(counted) == 1
    assert limit.take("2001:db8:0:1::1") is not None  # another /64
    limit.give_back("2001:db8::/64")
    assert limit.held("2001:db8::5") == 1
    assert limit.take("2001:db8::9") == "2001:db8::/64"


def test_a_host_is_held_to_its_share_only_while_the_broker_is_crowded() -> None:
    counted: list[int] = []
    connecting = ConnectingPerHost(2, lambda: counted.append(1))
    crowded = [False]
    connecting.crowded = lambda: crowded[0]
    hosts = [connecting.take("10.0.0.1") for _ in range(5)]
    assert hosts == ["10.0.0.1"] * 5
    assert counted == []
    crowded[0] = True
    assert connecting.take("10.0.0.1") is None
    assert counted == [1]
    for host in hosts[:4]:
        assert host is not None
        connecting.give_back(host)
    assert connecting.held("10.0.0.1") == 1
    assert connecting.take("10.0.0.1") == "10.0.0.1"
