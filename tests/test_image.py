"""The container image without a container engine: its definition, and its build steps run.

No Docker engine runs where CI does, so the image is tested in two halves. The
Containerfile is read and held to its promises (slim Python 3.11 base, two
stages, a numeric non-root user, no HEALTHCHECK, ``podindex serve`` as the
entrypoint, the build done by ``scripts/build-image-root``). Then that same
script builds the image's root into a temporary prefix, and the entrypoint
found there runs with the image's environment against the emulator, as
``podindex serve`` does in a cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podindex import __version__
from podindex.sim import POD, FakeCluster, populate
from tests.test_e2e_serve import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"
BUILD_SCRIPT = ROOT / "scripts" / "build-image-root"
PREFIX = "/opt/podindex"
IMAGE_UID = 65532
"""The image's user; deploy/base/deployment.yaml runs the pod as the same uid."""
TOKEN = "image-test-token"


def instructions() -> list[tuple[str, str]]:
    """The Containerfile as (INSTRUCTION, arguments), continuation lines joined."""
    joined = CONTAINERFILE.read_text().replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def image_env() -> dict[str, str]:
    """The ENV of the final stage."""
    env: dict[str, str] = {}
    stages = [i for i, (keyword, _) in enumerate(instructions()) if keyword == "FROM"]
    for keyword, rest in instructions()[stages[-1] :]:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def entrypoint() -> list[str]:
    found = [rest for keyword, rest in instructions() if keyword == "ENTRYPOINT"]
    assert len(found) == 1, "one ENTRYPOINT"
    argv: list[str] = json.loads(found[0])  # exec form: no shell between the signal and us
    return argv


def test_the_containerfile_builds_a_slim_non_root_image_with_the_build_script() -> None:
    steps = instructions()
    keywords = [keyword for keyword, _ in steps]
    args = dict((rest.split("=", 1)[0], rest.split("=", 1)[1]) for k, rest in steps if k == "ARG")
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(froms) == 2, "multi-stage: a build stage and a runtime stage"
    for base in froms:
        image = base.split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
        assert image.startswith("python:3.11-slim"), base
    assert "HEALTHCHECK" not in keywords, "Kubernetes probes /health and /ready instead"
    runs = [rest for keyword, rest in steps if keyword == "RUN"]
    assert f"scripts/build-ui && scripts/build-image-root {PREFIX}" in runs, (
        "the image is built by the CI scripts, the web UI's assets first"
    )
    copies = [rest for keyword, rest in steps if keyword == "COPY"]
    assert any("scripts/build-image-root" in c for c in copies)
    assert f"--from=build {PREFIX} {PREFIX}" in copies, "the runtime stage takes only the root"
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1] == f"{IMAGE_UID}:{IMAGE_UID}", "a numeric, non-root user"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))
    assert entrypoint() == [f"{PREFIX}/bin/podindex", "serve"]
    env = image_env()
    assert env["PODINDEX_LISTEN"] == "0.0.0.0:8080"
    assert env["PODINDEX_STORE"].startswith("sqlite:////var/lib/podindex/")


@pytest.fixture
async def sim() -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(token=TOKEN, bookmark_interval=0.5, grace_scale=0.01)
    populate(cluster, 200, seed=5)
    await cluster.start()
    yield cluster
    await cluster.stop()


@pytest.mark.timeout(420)
async def test_the_build_script_makes_a_root_whose_entrypoint_serves(
    sim: FakeCluster, tmp_path: Path
) -> None:
    prefix = tmp_path / "root"
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(prefix)],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PYTHON": "python3"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert built.stdout.strip().splitlines()[-1] == f"podindex {__version__}"
    assert not (prefix / "bin" / "pip").exists(), "pip stays out of the image"
    # Not the work tree's editable install: the package lives inside the prefix.
    where = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import podindex; print(podindex.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(prefix)), where

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    state = tmp_path / "var-lib-podindex"  # the image's volume
    state.mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PODINDEX_", "PYTHON", "VIRTUAL"))
    }
    for name, value in image_env().items():
        if name == "PATH":
            value = value.replace(PREFIX, str(prefix)).replace("$PATH", env.get("PATH", ""))
        env[name] = value.replace("/var/lib/podindex", str(state))
    port = free_port()
    env |= {
        "PODINDEX_LISTEN": f"127.0.0.1:{port}",  # the image listens on 0.0.0.0:8080
        "PODINDEX_SERVER": sim.url,
        "PODINDEX_TOKEN_FILE": str(token_file),
        "PODINDEX_LOG_LEVEL": "warning",
        "TMPDIR": str(tmp_path),
    }
    argv = [entrypoint()[0].replace(PREFIX, str(prefix)), *entrypoint()[1:]]
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=tempfile.mkdtemp(dir=tmp_path),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, process, timeout=60)
        pod = sim.list_objects(POD)[0]
        async with httpx.AsyncClient(base_url=base) as client:
            found = await client.get("/pod", params={"ip": pod["status"]["podIP"]})
            assert found.status_code == 200 and found.json()["uid"] == pod["metadata"]["uid"]
            assert (await client.get("/pods")).json()["count"] == 200
            # The web UI ships in the package, xterm.js included: no Node.js at run time.
            page = await client.get("/ui/")
            assert page.status_code == 200 and "vendor/xterm.js" in page.text
            terminal = await client.get("/ui/vendor/xterm.js")
            assert terminal.status_code == 200 and len(terminal.content) > 100_000
    finally:
        output = stop(process)
    assert (state / "podindex.db").exists(), output[-2000:]  # history went to the volume
    assert process.returncode == 0, output[-2000:]
