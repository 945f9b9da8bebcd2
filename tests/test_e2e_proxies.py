"""Forward-auth end to end: real Caddy and nginx in front of a real upstream, asking podindex.

The emulated cluster's pods get loopback addresses (``127.1.0.0/16``), so a
client that binds one of them as its source address *is* that pod to the
proxy. podindex runs as ``podindex serve`` against the emulator and trusts
the proxy's address (127.0.0.1) only. The proxies are the Debian packages
``caddy`` (2.6) and ``nginx`` (1.22) that ``scripts/test`` installs; without
them these tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from podindex.sim import FakeCluster
from tests.test_e2e_serve import free_port, start_podindex, stop, wait_ready

TOKEN = "proxies-e2e-token"
POD_NETWORK = "127.1.0.0/16"
COPIED = (
    "X-Pod-Name",
    "X-Pod-Namespace",
    "X-Pod-Uid",
    "X-Pod-Identity",
    "X-Pod-Cluster",
    "X-Pod-Workload",
    "X-Pod-Caller",
)

CADDYFILE = """\
{
\tadmin off
\tauto_https off
}

:%(port)d {
\tbind 127.0.0.1
\tforward_auth 127.0.0.1:%(podindex)d {
\t\turi /authz
\t\tcopy_headers %(copied)s
\t}
\treverse_proxy 127.0.0.1:%(upstream)d
}
"""

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %(dir)s/tmp;
  proxy_temp_path %(dir)s/tmp;
  fastcgi_temp_path %(dir)s/tmp;
  uwsgi_temp_path %(dir)s/tmp;
  scgi_temp_path %(dir)s/tmp;
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      auth_request /_podindex_authz;
%(auth_request_set)s
      proxy_pass http://127.0.0.1:%(upstream)d;
    }
    location = /_podindex_authz {
      internal;
      proxy_pass http://127.0.0.1:%(podindex)d/authz;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
"""


def proxy_binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(
            f"{name} is not installed: these tests need the Debian packages caddy and nginx "
            f"(scripts/test installs them: apt-get install --no-install-recommends caddy nginx)"
        )
    return found


class Upstream:
    """A tiny HTTP server that answers every request with what it saw: path and X-Pod-* headers."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                entry = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {
                        k: v for k, v in self.headers.items() if k.lower().startswith("x-pod-")
                    },
                }
                seen.append(entry)
                body = json.dumps(entry).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_caddy(work: Path, port: int, podindex: int, upstream: int) -> subprocess.Popen[bytes]:
    config = work / "Caddyfile"
    config.write_text(
        CADDYFILE
        % {"port": port, "podindex": podindex, "upstream": upstream, "copied": " ".join(COPIED)}
    )
    home = work / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.Popen(
        [proxy_binary("caddy"), "run", "--config", str(config), "--adapter", "caddyfile"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def start_nginx(work: Path, port: int, podindex: int, upstream: int) -> subprocess.Popen[bytes]:
    (work / "tmp").mkdir()
    work.chmod(0o755)  # nginx's worker may run as an unprivileged user
    copied = "\n".join(
        f"      auth_request_set $pod_{i} $upstream_http_{h.lower().replace('-', '_')};\n"
        f"      proxy_set_header {h} $pod_{i};"
        for i, h in enumerate(COPIED)
    )
    config = work / "nginx.conf"
    config.write_text(
        NGINX_CONF
        % {
            "dir": work,
            "port": port,
            "podindex": podindex,
            "upstream": upstream,
            "auth_request_set": copied,
        }
    )
    return subprocess.Popen(
        [proxy_binary("nginx"), "-c", str(config), "-p", str(work), "-e", str(work / "error.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_listening(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise AssertionError(f"{name} exited with {process.returncode}: {output[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never listened on {port}")


def stop_proxy(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    try:
        output, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output.decode(errors="replace") if output else ""


def client_from(ip: str) -> httpx.AsyncClient:
    """A client whose connections come from ``ip``: to the proxy, that pod is calling."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=ip), timeout=10, trust_env=False
    )


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.mark.timeout(120)
@pytest.mark.parametrize("proxy", ["caddy", "nginx"])
async def test_a_real_proxy_lets_same_namespace_pods_through_and_stops_others(
    proxy: str, upstream: Upstream, tmp_path: Path
) -> None:
    proxy_binary(proxy)  # fail first, and clearly, if it is missing
    sim = FakeCluster(token=TOKEN, bookmark_interval=0.5, pod_network=POD_NETWORK)
    caller = sim.create_pod(
        "team-a", "caller", node="node-1", labels={"app.kubernetes.io/name": "fn-caller"}
    )
    intruder = sim.create_pod("team-b", "intruder", node="node-1")
    caller_ip, intruder_ip = caller["status"]["podIP"], intruder["status"]["podIP"]
    assert caller_ip.startswith("127.1.") and intruder_ip.startswith("127.1.")

    # The emulator starts only later: until then podindex has not synced.
    sim_port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    podindex, base = start_podindex(
        "serve",
        "--server",
        f"http://127.0.0.1:{sim_port}",
        "--token-file",
        str(token_file),
        "--trusted-proxies",
        "127.0.0.1/32",
        "--authz-audit",
        "true",
        "--log-level",
        "warning",
        env={},
    )
    podindex_port = int(base.rsplit(":", 1)[1])
    port = free_port()
    work = tmp_path / proxy
    work.mkdir()
    start = start_caddy if proxy == "caddy" else start_nginx
    server = start(work, port, podindex_port, upstream.port)
    url = f"http://127.0.0.1:{port}/fission-function/team-a/hello"
    proxy_output = ""
    try:
        await wait_listening(port, server, proxy)
        await wait_listening(podindex_port, podindex, "podindex")

        async with client_from(caller_ip) as pod:
            early = await pod.post(url, content=b"{}")
        # podindex answers 503 (fail closed); Caddy passes it on, nginx turns it into a 500.
        assert early.status_code == (503 if proxy == "caddy" else 500), early.text
        assert upstream.seen == []

        await sim.start(port=sim_port)
        await wait_ready(base, podindex, timeout=60)

        async with client_from(caller_ip) as pod:
            allowed = await pod.post(url, content=b"{}", headers={"X-Pod-Namespace": "team-z"})
        assert allowed.status_code == 200, allowed.text
        seen = allowed.json()
        assert seen["path"] == "/fission-function/team-a/hello" and seen["method"] == "POST"
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert headers["x-pod-namespace"] == "team-a"  # the client's own value was replaced
        assert headers["x-pod-name"] == "caller"
        assert headers["x-pod-uid"] == caller["metadata"]["uid"]
        assert headers["x-pod-identity"] == "fn-caller"
        assert headers["x-pod-caller"] == "pod"

        # A target named by the host: <service>.<namespace>.svc, forwarded as X-Forwarded-Host.
        by_host = f"http://127.0.0.1:{port}/hello"
        host = {"Host": "hello.team-a.svc.cluster.local"}
        async with client_from(caller_ip) as pod:
            assert (await pod.get(by_host, headers=host)).status_code == 200
        async with client_from(intruder_ip) as pod:
            assert (await pod.get(by_host, headers=host)).status_code == 403

        calls = len(upstream.seen)
        async with client_from(intruder_ip) as pod:
            denied = await pod.get(url)
            # Spoofed forwarded headers: the proxy is trusted, the client is not.
            spoofed = await pod.get(
                url,
                headers={
                    "X-Forwarded-For": caller_ip,
                    "X-Real-IP": caller_ip,
                    "Forwarded": f"for={caller_ip}",
                },
            )
            # Straight to podindex: an untrusted peer's headers change nothing.
            direct = await pod.get(
                f"{base}/authz",
                headers={
                    "X-Forwarded-For": caller_ip,
                    "X-Forwarded-Uri": "/fission-function/team-a/hello",
                },
            )
        assert denied.status_code == 403, denied.text
        assert spoofed.status_code == 403, spoofed.text
        assert direct.status_code == 403 and direct.json()["caller_ip"] == intruder_ip
        assert len(upstream.seen) == calls  # nothing denied reached the upstream
        if proxy == "caddy":  # Caddy hands podindex's answer to the client as it is
            assert denied.json()["reason"] == "other_namespace"

        async with client_from("127.1.9.9") as stranger:  # no pod has this address
            assert (await stranger.get(url)).status_code == 403

        async with httpx.AsyncClient(trust_env=False) as plain:
            metrics = (await plain.get(f"{base}/metrics")).text
        assert 'podindex_authz_decisions_total{decision="allow",reason="same_namespace"}' in (
            metrics
        )
    finally:
        proxy_output = stop_proxy(server)
        output = stop(podindex)
        await sim.stop()
    assert TOKEN not in output
    assert '"decision":"deny"' in output, output[-3000:]  # the audit lines
    assert "emerg" not in proxy_output and "panic" not in proxy_output, proxy_output[-3000:]


def test_the_readme_caddyfile_is_valid_caddy_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (caddyfile,) = [b.split("```", 1)[0] for b in readme.split("```caddyfile\n")[1:]]
    assert "forward_auth" in caddyfile and "copy_headers" in caddyfile
    for header in COPIED:
        assert header in caddyfile
    path = tmp_path / "Caddyfile"
    path.write_text(caddyfile)
    adapted = subprocess.run(
        [proxy_binary("caddy"), "adapt", "--config", str(path), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert adapted.returncode == 0, adapted.stderr
    assert '"forward_auth"' in adapted.stdout or "/authz" in adapted.stdout


@pytest.mark.timeout(90)
async def test_a_running_podindex_reloads_its_policy_without_dropping_requests(
    tmp_path: Path,
) -> None:
    sim = FakeCluster(token=TOKEN, bookmark_interval=0.5, pod_network=POD_NETWORK)
    sim.create_pod("team-a", "callee", node="node-1")
    caller = sim.create_pod("team-b", "caller", node="node-1")
    caller_ip = caller["status"]["podIP"]
    await sim.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - to: [team-a]\n    from: {namespaces: [Team_B]}\n")
    common = ["serve", "--server", sim.url, "--token-file", str(token_file)]
    refused = subprocess.run(
        [*_podindex_command(), *common, "--authz-policy", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert f"{bad} line 3 (rules[0].from.namespaces)" in refused.stderr, refused.stderr

    podindex, base = start_podindex(
        *common, "--authz-policy", str(policy), "--log-level", "info", env={}
    )
    url = f"{base}/authz"
    headers = {"X-Forwarded-Uri": "/fission-function/team-a/fn"}
    statuses: list[int] = []
    try:
        await wait_ready(base, podindex)
        async with client_from(caller_ip) as pod:
            assert (await pod.get(url, headers=headers)).status_code == 403
            stop_asking = asyncio.Event()

            async def keep_asking() -> None:
                while not stop_asking.is_set():
                    statuses.append((await pod.get(url, headers=headers)).status_code)

            asker = asyncio.create_task(keep_asking())
            await asyncio.sleep(0.3)
            policy.write_text("rules:\n  - from: {namespaces: [team-b]}\n    to: [team-a]\n")
            deadline = time.monotonic() + 15
            while (not statuses or statuses[-1] != 200) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert statuses[-1] == 200, "the new policy never took effect"
            # A broken file keeps the policy in effect.
            policy.write_text("rules:\n  - from: {namespaces: [team-b]}\n    to: [Team-A]\n")
            await asyncio.sleep(2.5)
            stop_asking.set()
            await asker
            assert (await pod.get(url, headers=headers)).status_code == 200
    finally:
        output = stop(podindex)
        await sim.stop()
    assert set(statuses) <= {200, 403}, sorted(set(statuses))  # none failed or was dropped
    assert "authz policy reloaded" in output
    assert "line 3 (rules[0].to)" in output and "keeping the previous one" in output


def _podindex_command() -> list[str]:
    return [sys.executable, "-m", "podindex"]
