"""Command-line entry point that serves a populated, churning FakeCluster until terminated.

Benchmarks and ``podindex demo`` need the emulator in its own process so that
its CPU time is not charged to the service under test; this module is what
``podindex sim`` (and ``python -m podindex.sim.run``) runs. It writes the API
URL to ``--ready-file`` once the port is listening, so callers can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from podindex.sim.churn import Churn, populate
from podindex.sim.cluster import FakeCluster
from podindex.sim.ipam import DEFAULT_POD_NETWORK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podindex sim", description="Serve an emulated Kubernetes API server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pods", type=int, default=1000, help="pods to populate at start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--churn-rate", type=float, default=10.0, help="operations/s; 0 = none")
    parser.add_argument("--token", default=None, help="required bearer token")
    parser.add_argument("--token-file", type=Path, default=None, help="read the token from a file")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    parser.add_argument("--grace-scale", type=float, default=0.01)
    parser.add_argument("--history-limit", type=int, default=10_000)
    parser.add_argument("--ready-file", type=Path, default=None, help="write the URL here when up")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="write a kubeconfig here")
    parser.add_argument(
        "--pod-network",
        default=DEFAULT_POD_NETWORK,
        help="A.B.0.0/16 the pod ranges come from; 127.1.0.0/16 gives loopback pod IPs "
        "(a local client binding one is that pod, e.g. to try /authz behind a proxy)",
    )
    parser.add_argument(
        "--no-lifecycle-events",
        dest="lifecycle_events",
        action="store_false",
        help="do not emit scheduler/kubelet Events (Scheduled, Pulled, Started, ...) on churn",
    )
    return parser


def _read_token(path: str | Path) -> str:
    return Path(path).read_text().strip()


def _publish_url(target: Path, url: str) -> None:
    """Write then rename, so a reader polling the file never sees a partial URL."""
    partial = target.with_name(target.name + ".partial")
    partial.write_text(url + "\n")
    partial.replace(target)


async def run_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    pods: int = 1000,
    churn_rate: float = 10.0,
    token: str | None = None,
    token_file: str | Path | None = None,
    seed: int = 0,
    ready_file: str | Path | None = None,
    tls: bool = False,
    kubeconfig: str | Path | None = None,
    bookmark_interval: float = 60.0,
    grace_scale: float = 0.01,
    history_limit: int = 10_000,
    lifecycle_events: bool = True,
    stop: asyncio.Event | None = None,
    pod_network: str = DEFAULT_POD_NETWORK,
) -> int:
    """Populate, serve and churn until SIGINT/SIGTERM (or ``stop`` is set); returns 0."""
    if token_file is not None:
        token = _read_token(token_file)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    cluster = FakeCluster(
        token=token,
        tls=tls,
        bookmark_interval=bookmark_interval,
        grace_scale=grace_scale,
        history_limit=history_limit,
        pod_network=pod_network,
        lifecycle_events=lifecycle_events,
    )
    if pods:
        populate(cluster, pods, seed=seed)
    await cluster.start(host, port)
    try:
        if kubeconfig is not None:
            cluster.write_kubeconfig(kubeconfig)
        if ready_file is not None:
            _publish_url(Path(ready_file), cluster.url)
        print(f"podindex sim serving {cluster.url}", file=sys.stderr, flush=True)
        churn_task = None
        if churn_rate > 0:
            churn = Churn(cluster, seed=seed)
            churn_task = asyncio.create_task(churn.run(duration=float("inf"), rate=churn_rate))
        await stop.wait()
        if churn_task is not None:
            churn_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await churn_task
    finally:
        await cluster.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(
        run_simulator(
            host=args.host,
            port=args.port,
            pods=args.pods,
            churn_rate=args.churn_rate,
            token=args.token,
            token_file=args.token_file,
            seed=args.seed,
            ready_file=args.ready_file,
            tls=args.tls,
            kubeconfig=args.kubeconfig,
            bookmark_interval=args.bookmark_interval,
            grace_scale=args.grace_scale,
            history_limit=args.history_limit,
            pod_network=args.pod_network,
            lifecycle_events=args.lifecycle_events,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
