"""``podindex``: serve, lookup, demo, sim.

Every ``serve`` flag is also a ``PODINDEX_<NAME>`` environment variable; a
flag wins over the variable. ``serve`` hands the merged settings to granian's
worker through the environment (see :mod:`podindex.settings`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from podindex import __version__
from podindex.settings import Settings, SettingsError, convert, env_name
from podindex.store.base import redact

_SERVE_FLAGS: dict[str, str] = {
    "listen": "HOST:PORT to listen on (default 127.0.0.1:8080)",
    "kubeconfig": "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)",
    "context": "kubeconfig context (default: the current context)",
    "server": "API server URL, instead of a kubeconfig (with --token-file, --ca-file)",
    "token_file": "bearer token file for --server (re-read when it changes)",
    "ca_file": "CA bundle for --server",
    "cluster_id": "id this cluster is reported under (default 'default')",
    "namespace": "watch only this namespace (default: all)",
    "selector": "watch only pods matching this label selector",
    "grace_period": "seconds a deleted pod's IP keeps resolving as terminated (default 30)",
    "stall_timeout": "seconds of watch silence before the stream is restarted (default 90)",
    "page_size": "LIST chunk size (default 500)",
    "log_level": "debug, info, warning or error (default info)",
    "store": "history store: sqlite:///path/file.db or postgresql://user@host/db "
    "(default sqlite:///podindex.db)",
    "store_writer_process": "write history from a child process, so that writes use a "
    "second core when one is idle (default false)",
    "retention": "how long dead pods stay in history, e.g. 7d, 12h (default 7d)",
    "instance_history": "finished container instances kept per container of a pod (default 10)",
    "watch": "false: watch no cluster, serve only what agents push (default true)",
    "ack_timeout": "seconds a push waits for the store before answering 503 (default 5)",
    "tokens_file": "access file: API bearer tokens (SHA-256) and service-account roles; "
    "without it nobody is admin (see `podindex token`)",
    "lookup_access": "who may read the index: open or reader (default open)",
    "tls_cert": "PEM certificate chain: serve HTTPS (with --tls-key)",
    "tls_key": "PEM private key for --tls-cert",
    "reconcile_interval": "seconds between reads of integrations and IP sets changed by "
    "other replicas sharing the store (default 10)",
    "allowed_origins": "origins allowed to open WebSockets besides the page's own host "
    "(comma-separated, e.g. https://dash.example.com)",
    "secret_key_file": "Fernet key that encrypts integration tokens at rest; without it no "
    "integration can be registered",
    "trusted_proxies": "/authz: comma-separated CIDRs of proxies whose forwarded headers "
    "name the caller (default: none)",
    "forwarded_headers": "/authz: client-address headers read from a trusted proxy, first "
    "present wins (default x-forwarded-for,x-real-ip,forwarded)",
    "authz_targets": "/authz: target-namespace presets fission, service-host and "
    "header:NAME (default fission,service-host)",
    "authz_policy": "/authz: YAML policy file (allow/deny and target rules), reloaded on change",
    "authz_audit": "/authz: log every decision as one audit line (default false)",
}


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    for name, help_text in _SERVE_FLAGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{help_text} [env {env_name(name)}]",
        )


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment first, flags over it."""
    base = Settings.from_env()
    overrides: dict[str, Any] = {}
    for f in fields(Settings):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        overrides[f.name] = convert(flag, value, str(f.type))
    settings = replace(base, **overrides)
    settings.validate()
    return settings


def _serve(settings: Settings) -> int:
    from granian.constants import Interfaces
    from granian.server import Server

    problem = check_policy(settings)  # here too for demo/run: not in a worker's traceback
    if problem is not None:
        print(f"podindex: {problem}", file=sys.stderr)
        return 2

    os.environ.update(settings.to_env())
    server = Server(
        "podindex.api.app:app_from_env",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=1,
        factory=True,
        log_access=False,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
        websockets=True,
        ssl_cert=Path(settings.tls_cert) if settings.tls_cert else None,
        ssl_key=Path(settings.tls_key) if settings.tls_key else None,
    )
    server.serve()
    return 0


def check_access(settings: Settings) -> str | None:
    """Resolve the cluster access once here, so a bad configuration fails before the server
    starts, with a message and exit status 2 instead of a worker traceback."""
    from podindex.kube.errors import ConfigError
    from podindex.service import Service

    try:
        access = asyncio.run(Service(settings).resolve_access())
    except ConfigError as exc:
        return str(exc)
    print(f"podindex: cluster from {access.source}", file=sys.stderr)
    return None


def check_tokens_file(settings: Settings) -> str | None:
    """Read the access file once here, so a broken one stops ``serve`` with its message."""
    from podindex.api.auth import AccessFile, AccessFileError

    try:
        AccessFile(settings.tokens_file)
    except AccessFileError as exc:
        return str(exc)
    return None


def check_secret_key(settings: Settings) -> str | None:
    """Read the integrations' key once here: a missing or malformed one stops ``serve``."""
    from podindex.sealing import Sealer, SealingError

    if settings.secret_key_file is None:
        return None
    try:
        Sealer.from_file(settings.secret_key_file)
    except SealingError as exc:
        return f"secret_key_file: {exc}"
    return None


def check_policy(settings: Settings) -> str | None:
    """A bad forward-auth policy file stops the start, naming its line."""
    from podindex.api.authz import PolicyError, read_policy

    if settings.authz_policy is None:
        return None
    try:
        read_policy(settings.authz_policy)
    except PolicyError as exc:
        return str(exc)
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    problem = check_tokens_file(settings) or check_secret_key(settings) or check_policy(settings)
    if problem is None and settings.watch:
        problem = check_access(settings)
    if problem is not None:
        print(f"podindex: {problem}", file=sys.stderr)
        return 2
    watching = f"cluster '{settings.cluster_id}'" if settings.watch else "no cluster: a broker"
    print(
        f"podindex {__version__}: serving on {settings.scheme}://{settings.listen} ({watching}), "
        f"history in {redact(settings.store)}; web UI at {_ui_url(settings)}",
        file=sys.stderr,
    )
    return _serve(settings)


def cmd_token(args: argparse.Namespace) -> int:
    """A new API token: the token itself once, and the access-file entry (its hash) to add."""
    from podindex.api.auth import new_token, token_digest

    token = new_token()
    print(f"token (give it to the caller; it is not stored anywhere): {token}", file=sys.stderr)
    print("add to the access file (--tokens-file) under 'tokens:':", file=sys.stderr)
    print(
        f"  - {{name: {json.dumps(args.name)}, role: {args.role}, sha256: {token_digest(token)}}}"
    )
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    url = args.server.rstrip("/") + "/pod?" + urllib.parse.urlencode({"ip": args.ip})
    request = urllib.request.Request(url)
    token = os.environ.get("PODINDEX_API_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        print(f"cannot reach podindex at {args.server}: {exc}", file=sys.stderr)
        return 2
    try:
        answer = json.loads(body)
    except ValueError:
        print(f"HTTP {status}: {body[:200]!r}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(describe_answer(status, answer))
    return 0 if status == 200 else 1


def describe_answer(status: int, answer: dict[str, Any]) -> str:
    """A person's reading of a ``/pod`` answer."""
    if status == 200 and answer.get("state") == "node":
        pods = ", ".join(f"{p['namespace']}/{p['name']}" for p in answer.get("pods", []))
        return (
            f"{answer['ip']} is node {answer['node_name']} (cluster {answer['cluster']}), "
            f"used by hostNetwork pods: {pods}"
        )
    if status == 200:
        lines = [
            f"{answer['namespace']}/{answer['name']}  ({answer['state']}, {answer['phase'] or 'no phase'})",
            f"  cluster   {answer['cluster']}",
            f"  uid       {answer['uid']}",
            f"  ips       {', '.join(answer['pod_ips'])}",
            f"  node      {answer['node_name'] or '-'}",
            f"  identity  {answer['identity']} ({answer['identity_source']})",
        ]
        if answer.get("workload"):
            lines.append(f"  workload  {answer['workload']['kind']}/{answer['workload']['name']}")
        if answer.get("released_at"):
            lines.append(f"  released  {answer['released_at']}")
        return "\n".join(lines)
    if status == 409:
        clusters = ", ".join(m["cluster"] for m in answer.get("matches", []))
        return f"{answer.get('ip')}: ambiguous, held in clusters {clusters}"
    return f"{answer.get('error', 'error')}: {answer.get('message', '')} (HTTP {status})"


def cmd_demo(args: argparse.Namespace) -> int:
    """The emulator with churn in a child process, and the service against it."""
    settings = settings_from(args)
    workdir = Path(tempfile.mkdtemp(prefix="podindex-demo-"))
    token_file = workdir / "token"
    token_file.write_text(os.urandom(16).hex())
    token_file.chmod(0o600)
    ready_file = workdir / "sim-url"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "podindex",
            "sim",
            "--port",
            "0",
            "--pods",
            str(args.pods),
            "--churn-rate",
            str(args.churn_rate),
            "--token-file",
            str(token_file),
            "--ready-file",
            str(ready_file),
        ],
    )
    try:
        deadline = time.monotonic() + 120
        while not ready_file.exists() or not ready_file.read_text().strip():
            if simulator.poll() is not None or time.monotonic() > deadline:
                print("the Kubernetes emulator did not start", file=sys.stderr)
                return 2
            time.sleep(0.05)
        sim_url = ready_file.read_text().strip()
        print(
            f"podindex demo: emulated cluster at {sim_url} with {args.pods} pods and churn "
            f"({args.churn_rate}/s); try: podindex lookup <ip> --server http://{settings.listen}",
            file=sys.stderr,
        )
        print(f"podindex demo: open the web UI at {_ui_url(settings)}", file=sys.stderr)
        tokens_file = settings.tokens_file or _demo_admin(workdir, settings)
        demo_settings = replace(
            settings,
            server=sim_url,
            token_file=str(token_file),
            kubeconfig=None,
            context=None,
            cluster_id=settings.cluster_id,
            tokens_file=tokens_file,
            # The emulated cluster lives as long as the demo: so does its history,
            # unless a store was asked for.
            store=settings.store
            if settings.store != Settings.store
            else f"sqlite:///{workdir}/history.db",
        )
        return _serve(demo_settings)
    finally:
        simulator.send_signal(signal.SIGTERM)
        try:
            simulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            simulator.kill()


def _demo_admin(workdir: Path, settings: Settings) -> str:
    """An access file with one new admin token, so the demo's web UI can exec and delete.

    The token is printed here, once, inside the URL that signs the browser in (after
    ``#``: a fragment never reaches the server, so no access log sees it).
    """
    from podindex.api.auth import new_token, token_digest

    token = new_token()
    access = workdir / "access.yaml"
    access.write_text(
        f"tokens:\n  - {{name: demo-admin, role: admin, sha256: {token_digest(token)}}}\n"
    )
    access.chmod(0o600)
    print(
        f"podindex demo: or signed in as admin (shell, delete): {_ui_url(settings)}#signin={token}",
        file=sys.stderr,
        flush=True,
    )
    return str(access)


def _ui_url(settings: Settings) -> str:
    """The web UI's address as a browser on this machine reaches it."""
    host = settings.host if settings.host not in ("0.0.0.0", "::", "[::]", "") else "127.0.0.1"
    return f"{settings.scheme}://{host}:{settings.port}/ui/"


def cmd_run(args: argparse.Namespace) -> int:
    """The Quick start: a real cluster when one is configured, the demo otherwise."""
    from podindex.kube.config import kubeconfig_path

    settings = settings_from(args)
    if (
        settings.server
        or kubeconfig_path(settings.kubeconfig)
        or os.environ.get("KUBERNETES_SERVICE_HOST")
    ):
        print("podindex: a cluster is configured; watching it", file=sys.stderr)
        return cmd_serve(args)
    print("podindex: no cluster configured (no kubeconfig); running the demo", file=sys.stderr)
    return cmd_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podindex", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"podindex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="watch the cluster and serve the API")
    _add_serve_flags(serve)
    serve.set_defaults(func=cmd_serve)

    run = commands.add_parser(
        "run", help="serve the configured cluster, or the demo when there is none"
    )
    _add_serve_flags(run)
    run.add_argument("--pods", type=int, default=2000, help="demo: pods to create")
    run.add_argument("--churn-rate", type=float, default=20.0, help="demo: changes per second")
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser("demo", help="serve against a built-in emulated cluster with churn")
    _add_serve_flags(demo)
    demo.add_argument("--pods", type=int, default=2000, help="pods to create")
    demo.add_argument("--churn-rate", type=float, default=20.0, help="changes per second")
    demo.set_defaults(func=cmd_demo)

    lookup = commands.add_parser("lookup", help="ask a running podindex who holds an IP")
    lookup.add_argument("ip")
    lookup.add_argument("--server", default="http://127.0.0.1:8080", help="podindex URL")
    lookup.add_argument("--json", action="store_true", help="print the raw JSON answer")
    lookup.set_defaults(func=cmd_lookup)

    token = commands.add_parser(
        "token",
        help="make an API token and print its access-file entry",
        description="Prints the new token on stderr (once) and the access-file entry, which "
        "holds only the token's SHA-256, on stdout. `podindex lookup` sends "
        "$PODINDEX_API_TOKEN when it is set.",
    )
    token.add_argument("--name", required=True, help="who the token is for (shown in errors)")
    token.add_argument("--role", choices=["reader", "admin"], default="reader")
    token.set_defaults(func=cmd_token)

    # Parsed by the emulator itself (podindex.sim.run); listed here for --help.
    commands.add_parser(
        "sim", help="run the Kubernetes API emulator alone (see podindex sim --help)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["sim"]:
        from podindex.sim.run import main as simulator_main

        return simulator_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        result: int = args.func(args)
    except SettingsError as exc:
        parser.exit(2, f"podindex: {exc}\n")
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
