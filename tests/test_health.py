"""The integration health state machine, driven by injected faults and a fake clock."""

from __future__ import annotations

import pytest

from podindex.kube.errors import ApiError, StreamStalled, TransportError, Unauthorized, Unreachable
from podindex.kube.health import HealthMonitor
from podindex.model import Status


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def api_error(code: int) -> ApiError:
    return ApiError(Status(code=code, reason="Boom", message="server said no"))


def test_pending_until_the_first_sync_then_connected() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock)
    assert (monitor.status, monitor.value, monitor.last_sync) == ("Pending", 0, None)
    monitor.tick()
    assert monitor.status == "Pending"
    monitor.on_sync()
    assert (monitor.status, monitor.value, monitor.last_sync) == ("Connected", 2, clock.now)


def test_watch_errors_degrade_count_and_recover_silently() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock)
    monitor.on_sync()
    for _ in range(3):
        clock.now += 1
        monitor.on_error(api_error(500))
    assert (monitor.status, monitor.value) == ("Degraded", 1)
    assert monitor.consecutive_failures == 3
    assert monitor.reconnects == 3
    assert monitor.last_error_phase == "watch" and "500" in monitor.last_error
    clock.now += 10
    monitor.on_sync()
    assert monitor.status == "Connected"
    assert monitor.consecutive_failures == 0
    assert monitor.reconnects == 3  # kept: a total
    assert monitor.last_error == "" and monitor.last_sync == clock.now


def test_degraded_for_five_minutes_is_disconnected() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(clock)
    monitor.on_sync()
    monitor.on_error(StreamStalled("no bytes for 90s"))
    clock.now += 299
    monitor.on_error(api_error(503))  # more failures do not restart the five minutes
    monitor.tick()
    assert monitor.status == "Degraded"
    clock.now += 1
    monitor.tick()
    assert (monitor.status, monitor.value) == ("Disconnected", 0)
    monitor.on_error(api_error(500))  # still failing: stays Disconnected
    assert monitor.status == "Disconnected" and monitor.consecutive_failures == 3
    monitor.on_sync()
    assert monitor.status == "Connected"
    # Degraded again: a fresh five minutes.
    monitor.on_error(api_error(500))
    clock.now += 200
    monitor.tick()
    assert monitor.status == "Degraded"


def test_a_cut_stream_degrades_an_unreachable_server_disconnects_at_once() -> None:
    monitor = HealthMonitor(FakeClock())
    monitor.on_sync()
    monitor.on_error(TransportError("watch /api/v1/pods: payload not completed"))
    assert (monitor.status, monitor.last_error_phase) == ("Degraded", "watch")
    monitor.on_error(Unreachable("GET /api/v1/pods: connection refused"))
    assert (monitor.status, monitor.last_error_phase) == ("Disconnected", "reachability")


def test_a_rejected_token_is_an_authentication_error() -> None:
    monitor = HealthMonitor(FakeClock())
    monitor.on_error(Unauthorized(Status(code=401, reason="Unauthorized", message="no")))
    assert (monitor.status, monitor.last_error_phase) == ("Degraded", "authentication")


async def test_a_malformed_answer_never_puts_the_token_in_the_health_error() -> None:
    """aiohttp's response errors carry the request's headers in their repr."""
    import asyncio

    from podindex.kube.client import PODS, KubeClient
    from podindex.kube.config import explicit_access
    from podindex.kube.errors import TransportError

    token = "s3cr3t-integration-token-0123456789"

    async def malformed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(malformed, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = KubeClient(explicit_access(f"http://127.0.0.1:{port}", token=token))
    monitor = HealthMonitor()
    try:
        with pytest.raises(TransportError) as caught:
            await client.list_page(PODS, None, {"limit": "1"})
        monitor.on_error(caught.value)
    finally:
        await client.close()
        server.close()
    assert token not in str(caught.value) and token not in monitor.last_error
    assert "ClientResponseError" in monitor.last_error
