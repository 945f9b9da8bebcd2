"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, against a
real ``podindex serve`` watching the emulator (and, once, the real ``podindex demo``).

Each test checks what a user sees and what the API did: a pod found by IP, a table narrowed
by status, log lines arriving as the emulator writes them, ``echo`` in a terminal, delete
hidden from a reader and refused by the API when forged. Every page is also checked for
script errors and Content-Security-Policy violations (they are console errors).

With ``PODINDEX_UI_SCREENSHOTS=docs`` the tests save a screenshot of each view there (the
README shows them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from playwright.async_api import Browser, Page, async_playwright, expect

from podindex.sim import POD, FakeCluster
from tests.auth import ADMIN_TOKEN, READER_TOKEN, standard_tokens
from tests.test_e2e_serve import TOKEN, free_port, start_podindex, stop, wait_ready
from tests.tls_certs import ca_pem

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("PODINDEX_UI_SCREENSHOTS")
REMOTE_TOKEN = "remote-cluster-token-0123456789"


def crashloop(obj: dict[str, Any]) -> None:
    status = obj["status"]
    status["conditions"] = [{"type": "Ready", "status": "False"}]
    for cs in status["containerStatuses"]:
        cs.update(
            ready=False,
            restartCount=7,
            state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
        )


@dataclass
class Served:
    sim: FakeCluster
    remote: FakeCluster
    url: str


@dataclass
class Tab:
    """A browser page and what went wrong on it (script errors, CSP violations)."""

    page: Page
    problems: list[str] = field(default_factory=list)

    async def shot(self, name: str) -> None:
        if SHOTS:
            await self.page.screenshot(path=f"{SHOTS}/ui-{name}.png")


@pytest.fixture
def chromium() -> str:
    assert os.path.exists(CHROMIUM), "Debian's chromium is needed (scripts/test installs it)"
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with (
        FakeCluster(token=TOKEN, bookmark_interval=0.5, log_tick=None) as sim,
        FakeCluster(token=REMOTE_TOKEN, tls=True, bookmark_interval=0.5, log_tick=None) as remote,
    ):
        for i in range(1, 9):
            sim.create_pod(
                "team-a" if i % 2 else "team-b",
                f"web-{i}",
                labels={"app.kubernetes.io/name": "web"},
                node=f"node-{i % 3}",
                ip=f"10.4.0.{i}",
                containers=["app", "proxy"] if i == 8 else ["app"],
            )
        for i in (2, 5, 6):
            sim.update_pod("team-a" if i % 2 else "team-b", f"web-{i}", crashloop)
        remote.create_pod("far", "away-1", node="r1", ip="10.9.0.1")
        remote.create_pod("far", "twin", node="r1", ip="10.4.0.4")  # web-4's IP, elsewhere
        sim.create_pod("kube-system", "node-exporter", node="node-1", host_network=True)
        kube_token = tmp_path / "kube-token"
        kube_token.write_text(TOKEN)
        key = tmp_path / "secret.key"
        key.write_bytes(Fernet.generate_key())
        env = {
            "PODINDEX_SERVER": sim.url,
            "PODINDEX_TOKEN_FILE": str(kube_token),
            "PODINDEX_TOKENS_FILE": str(standard_tokens(tmp_path)),
            "PODINDEX_SECRET_KEY_FILE": str(key),
            "PODINDEX_STORE": f"sqlite:///{tmp_path}/h.db",
            "PODINDEX_GRACE_PERIOD": "1",
        }
        process, url = start_podindex("serve", env=env)
        try:
            await wait_ready(url, process)
            yield Served(sim, remote, url)
        finally:
            output = stop(process)
        assert "Traceback" not in output, output[-3000:]
        for token in (ADMIN_TOKEN, READER_TOKEN, TOKEN, REMOTE_TOKEN):
            assert token not in output


def watch(tab: Tab) -> None:
    """Collect script errors, CSP violations and the UI's own files failing to load.
    (The API's 4xx answers the page handles are not problems: Chromium logs each one.)"""
    page = tab.page
    page.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))

    def console(message: Any) -> None:
        text = message.text
        if message.type == "error" and "the server responded with a status of 4" not in text:
            tab.problems.append(text)

    def response(answer: Any) -> None:
        if "/ui/" in answer.url and answer.status >= 400:
            tab.problems.append(f"{answer.url}: {answer.status}")

    page.on("console", console)
    page.on("response", response)


async def open_ui(browser: Browser, url: str, token: str | None = None, path: str = "") -> Tab:
    """The UI in a new browser context (its own sessionStorage), signed in with ``token``."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    tab = Tab(page)
    watch(tab)
    await page.goto(f"{url}/ui/" + (f"#signin={token}" if token else ""))
    if token:
        await expect(page.get_by_test_id("who")).not_to_have_text("not signed in")
    if path:
        await page.goto(f"{url}/ui/#/{path}")
    return tab


def deleting(sim: FakeCluster, namespace: str, name: str) -> bool:
    """The pod is gone from the emulator, or on its way (a deletion timestamp)."""
    stored = sim.stored(POD, namespace, name)
    return stored is None or "deletionTimestamp" in json.loads(stored.full_body())["metadata"]


def clean(tab: Tab, allowed: Callable[[str], bool] = lambda text: False) -> None:
    problems = [p for p in tab.problems if not allowed(p)]
    assert not problems, problems


async def rows_text(page: Page) -> list[str]:
    return [t.strip() for t in await page.get_by_test_id("pod-row").all_inner_texts()]


async def test_search_by_ip_finds_the_pod(browser: Browser, served: Served) -> None:
    tab = await open_ui(browser, served.url)
    page = tab.page
    await expect(page.get_by_test_id("pod-row")).to_have_count(9)
    await page.get_by_label("search").fill("10.4.0.3")
    await page.get_by_label("search").press("Enter")
    await expect(page.get_by_test_id("pod-row")).to_have_count(1)
    row = page.get_by_test_id("pod-row")
    await expect(row).to_contain_text("web-3")
    await expect(row).to_contain_text("10.4.0.3")
    await expect(row).to_contain_text("team-a")
    assert "ip=10.4.0.3" not in page.url or "q=10.4.0.3" in page.url  # the search is in the URL

    # An address nobody holds says so, and offers the address's history.
    await page.get_by_label("search").fill("10.4.9.9")
    await page.get_by_label("search").press("Enter")
    await expect(page.get_by_test_id("no-holder")).to_contain_text("No pod holds 10.4.9.9")
    # A node's own address, used by its host-network pods: said so, never one pod at random.
    node_ip = served.sim.node_ip("node-1")
    await page.get_by_label("search").fill(node_ip)
    await page.get_by_label("search").press("Enter")
    await expect(page.get_by_test_id("node-ip")).to_contain_text(f"{node_ip} is node node-1's")
    await expect(page.locator("main li")).to_have_text(["kube-system/node-exporter"])
    # A label selector is a label selector, a fragment a fragment.
    await page.get_by_label("search").fill("app.kubernetes.io/name=web")
    await page.get_by_label("search").press("Enter")
    await expect(page.get_by_test_id("total")).to_contain_text("8 pods")
    await page.get_by_label("search").fill("web-7")
    await page.get_by_label("search").press("Enter")
    await expect(page.get_by_test_id("pod-row")).to_have_count(1)
    clean(tab)


async def test_the_status_filter_narrows_the_table(browser: Browser, served: Served) -> None:
    tab = await open_ui(browser, served.url)
    page = tab.page
    await expect(page.get_by_test_id("total")).to_contain_text("9 pods")
    await page.get_by_label("status").fill("CrashLoopBackOff")
    await page.get_by_label("status").press("Enter")
    await expect(page.get_by_test_id("total")).to_contain_text("3 pods")
    rows = await rows_text(page)
    assert len(rows) == 3 and all("CrashLoopBackOff" in row for row in rows), rows
    assert {re.split(r"\s", row)[0] for row in rows} == {"web-2", "web-5", "web-6"}
    await page.get_by_label("namespace").fill("team-b")
    await page.get_by_label("namespace").press("Enter")
    await expect(page.get_by_test_id("total")).to_contain_text("2 pods")
    await page.get_by_label("status").fill("Running")
    await page.get_by_label("status").press("Enter")
    await expect(page.get_by_test_id("total")).to_contain_text("2 pods")
    assert all("Running" in row for row in await rows_text(page))
    clean(tab)


async def test_a_log_view_receives_lines_as_the_emulator_writes_them(
    browser: Browser, served: Served
) -> None:
    served.sim.write_log("team-a", "web-1", "app", "before we looked\n")
    tab = await open_ui(browser, served.url, READER_TOKEN, "pod/default/team-a/web-1?tab=logs")
    page = tab.page
    logs = page.get_by_test_id("logs")
    await expect(page.get_by_test_id("log-state")).to_have_text("following")
    await expect(logs).to_contain_text("before we looked")
    served.sim.write_log("team-a", "web-1", "app", "written while watching\n")
    await expect(logs).to_contain_text("written while watching")

    # Paused: lines are kept, not shown; resumed: shown, in order.
    await page.get_by_test_id("pause").click()
    served.sim.write_log("team-a", "web-1", "app", "during the pause\n")
    await asyncio.sleep(1.0)
    await expect(logs).not_to_contain_text("during the pause")
    await page.get_by_test_id("pause").click()
    await expect(logs).to_contain_text("during the pause")
    text = await logs.inner_text()
    assert text.index("before we looked") < text.index("written while") < text.index("during")

    # Timestamps on: each line starts with its time.
    await page.get_by_label("timestamps").check()
    await expect(logs).to_contain_text("during the pause")
    first = (await logs.inner_text()).splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", first), first

    # Its events, from the cluster.
    served.sim.record_event("team-a", "web-1", "Warning", "BackOff", "Back-off pulling", count=3)
    await page.locator("[data-tab=events]").click()
    events = page.locator("table")
    await expect(events).to_contain_text("BackOff")
    await expect(events).to_contain_text("Back-off pulling")

    # A pod with two containers: the picker chooses which log.
    served.sim.write_log("team-b", "web-8", "proxy", "proxy says hi\n")
    await page.goto(f"{served.url}/ui/#/pod/default/team-b/web-8?tab=logs")
    await page.get_by_label("container").select_option("proxy")
    await expect(page.get_by_test_id("logs")).to_contain_text("proxy says hi")
    clean(tab)


async def test_a_terminal_session_runs_echo_and_shows_the_output(
    browser: Browser, served: Served
) -> None:
    tab = await open_ui(browser, served.url, ADMIN_TOKEN, "pod/default/team-a/web-1?tab=terminal")
    page = tab.page
    await expect(page.get_by_test_id("term-state")).to_have_text("connected")
    await page.get_by_test_id("terminal").click()
    await page.keyboard.type("echo hello-from-xterm\n")
    screen = page.locator(".xterm-rows")
    await expect(screen).to_contain_text("# echo hello-from-xterm")
    # The echo of what was typed comes first; the command's output, on a line of its
    # own, follows in another message.
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        lines = [line.strip() for line in (await screen.inner_text()).splitlines()]
        if "hello-from-xterm" in lines:
            break
        assert asyncio.get_running_loop().time() < deadline, lines
        await asyncio.sleep(0.05)
    await page.keyboard.type("exit 4\n")
    await expect(page.get_by_test_id("term-state")).to_have_text("exited (4)")
    session = served.sim.exec_sessions[-1]
    assert session.command == ["/bin/sh"]
    clean(tab)


async def test_a_reader_sees_no_delete_button_and_a_forged_delete_is_refused(
    browser: Browser, served: Served
) -> None:
    tab = await open_ui(browser, served.url, READER_TOKEN, "pod/default/team-a/web-3")
    page = tab.page
    await expect(page.get_by_test_id("pod-status")).to_have_text("Running")
    await expect(page.get_by_test_id("delete")).to_have_count(0)
    await expect(page.locator("[data-tab=terminal]")).to_have_count(0)
    await expect(page.get_by_test_id("who")).to_contain_text("reader")
    # The request the hidden button would send, forged from the page with the reader's token.
    forged = await page.evaluate(
        """async () => {
            const path = "/api/clusters/default/namespaces/team-a/pods/web-3";
            const token = sessionStorage.getItem("podindex.token");
            const withToken = await fetch(path, {method: "DELETE",
                headers: {Authorization: "Bearer " + token}});
            const without = await fetch(path, {method: "DELETE"});
            return [withToken.status, (await withToken.json()).message, without.status];
        }"""
    )
    assert forged[0] == 403 and "needs admin" in forged[1], forged
    assert forged[2] == 401
    assert not deleting(served.sim, "team-a", "web-3")
    # The exec WebSocket refuses a reader too, whatever the page shows.
    refused = await page.evaluate(
        """() => new Promise((resolve) => {
            const token = sessionStorage.getItem("podindex.token");
            const b64 = btoa(token).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
            const ws = new WebSocket(
                `ws://${location.host}/ws/clusters/default/namespaces/team-a/pods/web-3/exec`,
                ["podindex.v1", "base64url.bearer.authorization.podindex.io." + b64]);
            ws.onopen = () => resolve("opened");
            ws.onclose = (event) => resolve("closed " + event.code);
        })"""
    )
    assert refused.startswith("closed"), refused
    clean(tab, allowed=lambda text: "WebSocket connection to" in text)


async def test_an_admin_deletes_a_pod_after_confirming(browser: Browser, served: Served) -> None:
    tab = await open_ui(browser, served.url, ADMIN_TOKEN, "pod/default/team-a/web-7")
    page = tab.page
    await expect(page.get_by_test_id("pod-status")).to_have_text("Running")
    await page.get_by_test_id("delete").click()
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_contain_text("Delete pod web-7?")
    await dialog.get_by_role("button", name="Cancel").click()
    await asyncio.sleep(0.3)
    assert served.sim.stored(POD, "team-a", "web-7") is not None, "cancel deletes nothing"
    await page.get_by_test_id("delete").click()
    await dialog.get_by_role("button", name="Delete").click()
    await expect(page.locator("#banner")).to_contain_text("deleted")

    deadline = time.monotonic() + 10
    while not deleting(served.sim, "team-a", "web-7"):
        assert time.monotonic() < deadline, "the pod was not deleted"
        await asyncio.sleep(0.05)
    clean(tab)


async def test_the_ip_view_shows_the_holder_and_the_lease_history(
    browser: Browser, served: Served
) -> None:
    served.sim.delete_pod("team-a", "web-1", grace_seconds=0)
    await asyncio.sleep(1.2)
    served.sim.create_pod("team-a", "web-1-new", node="node-1", ip="10.4.0.1")
    async with httpx.AsyncClient(base_url=served.url) as client:
        deadline = time.monotonic() + 10
        while (await client.get("/pod", params={"ip": "10.4.0.1"})).json().get(
            "name"
        ) != "web-1-new":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    tab = await open_ui(browser, served.url, path="ip?ip=10.4.0.1")
    page = tab.page
    await expect(page.get_by_test_id("lease-row")).to_have_count(2)
    rows = await page.get_by_test_id("lease-row").all_inner_texts()
    assert "web-1-new" in rows[0] and "now" in rows[0], rows
    assert "team-a/web-1\t" in rows[1] and "now" not in rows[1], rows
    await expect(page.get_by_test_id("ip-answer")).to_contain_text("web-1-new")
    await tab.shot("ip")

    # At a time: who held it then (the first pod, a moment before it went).
    async with httpx.AsyncClient(base_url=served.url) as client:
        body = (await client.get("/api/ips/10.4.0.1/leases")).json()
    first = body["leases"][1]
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first["held_from"]))
    await page.get_by_label("time").fill(at)
    await page.get_by_label("time").press("Enter")
    await expect(page.get_by_test_id("held-at")).to_contain_text("team-a/web-1 ")
    clean(tab)


async def test_clusters_are_registered_with_the_phased_test_shown(
    browser: Browser, served: Served
) -> None:
    tab = await open_ui(browser, served.url, ADMIN_TOKEN, "integrations")
    page = tab.page
    await expect(page.get_by_test_id("integrations")).to_contain_text("No clusters registered")
    form = page.locator("form.register")
    assert served.remote.ca_pem is not None
    await form.locator("[name=name]").fill("remote")
    await form.locator("[name=endpoint]").fill(served.remote.url)
    await form.locator("[name=ca_cert]").fill(served.remote.ca_pem.decode())
    await form.locator("[name=bearer_token]").fill("a-wrong-token")
    await form.get_by_role("button", name="Test connection").click()
    phases = page.get_by_test_id("phases").locator("li")
    await expect(phases).to_have_count(3)
    await expect(phases.nth(2)).to_contain_text("✗ authentication")
    await expect(phases.nth(0)).to_contain_text("✓ certificate")
    await expect(phases.nth(1)).to_contain_text("✓ reachability")

    # A CA that did not sign the server's certificate: stops at reachability.
    await form.locator("[name=ca_cert]").fill(ca_pem(name="stranger"))
    await form.get_by_role("button", name="Test connection").click()
    await expect(phases.nth(1)).to_contain_text("✗ reachability")
    await expect(phases.nth(2)).to_contain_text("\u2013 authentication")

    await form.locator("[name=ca_cert]").fill(served.remote.ca_pem.decode())
    await form.locator("[name=bearer_token]").fill(REMOTE_TOKEN)
    await form.get_by_role("button", name="Test connection").click()
    await expect(phases.nth(2)).to_contain_text("✓ authentication")
    await form.get_by_role("button", name="Register").click()
    table = page.get_by_test_id("integrations")
    await expect(table).to_contain_text("remote")
    deadline = time.monotonic() + 20
    while "Connected" not in await table.inner_text():
        assert time.monotonic() < deadline, await table.inner_text()
        await asyncio.sleep(0.5)
        await page.reload()
    await tab.shot("clusters")

    # Its pods join the list; an IP held in both clusters is shown as such, both holders.
    await page.goto(f"{served.url}/ui/#/pods?q=10.9.0.1")
    await expect(page.get_by_test_id("pod-row")).to_contain_text("away-1")
    await page.goto(f"{served.url}/ui/#/pods?q=10.4.0.4")
    await expect(page.get_by_test_id("ambiguous")).to_contain_text("held in 2 clusters")
    await expect(page.get_by_test_id("pod-row")).to_have_count(2)
    holders = await rows_text(page)
    assert any("web-4" in r for r in holders) and any("twin" in r for r in holders), holders
    # A reader sees the clusters but no register form.
    reader = await open_ui(browser, served.url, READER_TOKEN, "integrations")
    await expect(reader.page.get_by_test_id("integrations")).to_contain_text("Connected")
    await expect(reader.page.locator("form.register")).to_have_count(0)
    clean(tab)
    clean(reader)


async def test_signing_in_keeps_the_token_in_the_tab_only(browser: Browser, served: Served) -> None:
    tab = await open_ui(browser, served.url)
    page = tab.page
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#token-input").fill("not-a-token")
    await page.locator("#signin-form").get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).to_have_text("This token is not known.")
    await page.locator("#token-input").fill(ADMIN_TOKEN)
    await page.locator("#signin-form").get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("who")).to_have_text("caller-0-admin · admin")
    assert await page.evaluate("sessionStorage.getItem('podindex.token')") == ADMIN_TOKEN
    assert await page.evaluate("localStorage.length") == 0
    assert ADMIN_TOKEN not in await page.evaluate("document.cookie")
    # A new tab of the same browser starts signed out.
    other = await page.context.new_page()
    await other.goto(f"{served.url}/ui/")
    await expect(other.get_by_test_id("who")).to_have_text("not signed in")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_test_id("who")).to_have_text("not signed in")
    assert await page.evaluate("sessionStorage.getItem('podindex.token')") is None
    clean(tab)


@pytest.mark.timeout(180)
async def test_a_new_user_of_the_demo_finds_a_pod_by_ip_follows_its_logs_and_opens_a_shell(
    browser: Browser, tmp_path: Path
) -> None:
    """The README's promise: run the demo, open the printed URL, no docs needed."""
    port = free_port()
    printed = tmp_path / "demo.out"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PODINDEX_")}
    with printed.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "podindex", "demo", "--pods", "300"),
                *("--churn-rate", "5", "--listen", f"127.0.0.1:{port}"),
            ],
            env=clean_env,
            cwd=tempfile.mkdtemp(prefix="podindex-demo-test-"),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        signin = None
        deadline = time.monotonic() + 60
        while signin is None:
            assert process.poll() is None, printed.read_text()
            assert time.monotonic() < deadline, printed.read_text()
            found = re.search(r"(http://\S+/ui/#signin=\S+)", printed.read_text())
            signin = found.group(1) if found else None
            await asyncio.sleep(0.1)
        assert f"open the web UI at http://127.0.0.1:{port}/ui/" in printed.read_text()
        await wait_ready(f"http://127.0.0.1:{port}", process, timeout=60)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            pods = (await client.get("/pods", params={"limit": "500"})).json()["items"]
        # A pod the churn leaves alone (it replaces pods of its own namespace).
        target = next(
            p for p in pods if p["pod_ip"] and p["phase"] == "Running" and p["namespace"] != "churn"
        )

        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        tab = Tab(page)
        watch(tab)
        await page.goto(signin)
        assert "signin" not in page.url, "the token leaves the address bar at once"
        await expect(page.get_by_test_id("who")).to_contain_text("admin")
        await expect(page.get_by_test_id("pod-row")).to_have_count(20)
        await tab.shot("pods")

        await page.get_by_label("search").fill(target["pod_ip"])
        await page.get_by_label("search").press("Enter")
        await expect(page.get_by_test_id("pod-row")).to_have_count(1)
        await page.get_by_test_id("pod-row").get_by_role("link", name=target["name"]).click()
        await expect(page.get_by_test_id("pod-status")).to_be_visible()
        await tab.shot("pod")

        await page.locator("[data-tab=logs]").click()
        logs = page.get_by_test_id("logs")
        await expect(logs).to_contain_text("heartbeat")
        seen = (await logs.inner_text()).count("\n")
        deadline = time.monotonic() + 10  # the emulator writes a heartbeat line every second
        while (await logs.inner_text()).count("\n") <= seen:
            assert time.monotonic() < deadline, "no new log line arrived"
            await asyncio.sleep(0.2)
        await tab.shot("logs")

        await page.locator("[data-tab=terminal]").click()
        await expect(page.get_by_test_id("term-state")).to_have_text("connected")
        await page.get_by_test_id("terminal").click()
        await page.keyboard.type("echo shell-in-the-demo\n")
        await expect(page.locator(".xterm-rows")).to_contain_text("# echo shell-in-the-demo")
        deadline = time.monotonic() + 10
        while "shell-in-the-demo" not in [
            line.strip() for line in (await page.locator(".xterm-rows").inner_text()).splitlines()
        ]:
            assert time.monotonic() < deadline, "the command's output never showed"
            await asyncio.sleep(0.1)
        await page.keyboard.type("ls /\n")
        await tab.shot("terminal")
        clean(tab)
    finally:
        output = stop(process) + printed.read_text()
    assert "Traceback" not in output, output[-3000:]
    token = signin.rsplit("=", 1)[1] if signin else None
    assert token is not None
    assert output.count(token) == 1, "the admin token is printed once, in the sign-in URL"
