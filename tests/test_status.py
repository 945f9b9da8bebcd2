"""kubectl's READY/STATUS/RESTARTS columns, checked against a real API server's Table."""

from __future__ import annotations

import email.utils
from datetime import datetime
from typing import Any

import msgspec
import pytest

from podindex.model import Pod
from podindex.status import display_status, human_duration, restarts_column
from tests.recordings import recording

TABLE = recording("40-table-pods-status-column")
ROWS = msgspec.json.decode(TABLE["response"]["body"])["rows"]
ANSWERED_AT = email.utils.parsedate_to_datetime(TABLE["response"]["headers"]["Date"])


def recorded_pod(row: dict[str, Any]) -> Pod:
    """The pod behind a Table row: its metadata (the row's object), the status the
    recording PATCHed, and a spec naming the containers that status reports."""
    name = row["cells"][0]
    patched = TABLE["patched"][name]
    # Not patched: as the API server created it, unscheduled.
    status = patched["patched_status"] or {"phase": "Pending"}
    containers = [{"name": c["name"]} for c in status.get("containerStatuses", [])]
    init = [{"name": c["name"]} for c in status.get("initContainerStatuses", [])]
    pod = {
        "metadata": row["object"]["metadata"],
        "spec": {
            "containers": containers or [{"name": "app"}],
            "initContainers": init or None,
            "restartPolicy": patched["restartPolicy"],
        },
        "status": status,
    }
    return msgspec.convert(pod, Pod)


@pytest.mark.parametrize("row", ROWS, ids=[r["cells"][0] for r in ROWS])
def test_columns_match_the_api_servers_table(row: dict[str, Any]) -> None:
    ready, status, restarts = row["cells"][1:4]
    shown = display_status(recorded_pod(row))
    assert (shown.ready, shown.status) == (ready, status)
    age = None
    if shown.last_restart is not None:
        age = (ANSWERED_AT - datetime.fromisoformat(shown.last_restart)).total_seconds()
    assert restarts_column(shown.restarts, age) == restarts


def test_the_recording_covers_the_statuses_operators_filter_on() -> None:
    seen = {display_status(recorded_pod(r)).status for r in ROWS}
    assert {
        "Running",
        "Pending",
        "ContainerCreating",
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "Completed",
        "Error",
        "Terminating",
        "NotReady",
        "Init:0/1",
        "Init:CrashLoopBackOff",
    } <= seen


def test_a_started_sidecar_counts_as_a_container_and_does_not_block_init() -> None:
    pod = msgspec.convert(
        {
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [
                    {
                        "name": "proxy",
                        "ready": True,
                        "started": True,
                        "restartCount": 1,
                        "state": {"running": {}},
                    }
                ],
                "containerStatuses": [
                    {"name": "app", "ready": True, "restartCount": 2, "state": {"running": {}}}
                ],
            },
        },
        Pod,
    )
    shown = display_status(pod)
    assert (shown.ready, shown.status, shown.restarts) == ("2/2", "Running", 3)


@pytest.mark.parametrize(
    ("terminated", "status"),
    [({"exitCode": 2}, "Init:ExitCode:2"), ({"exitCode": 137, "signal": 9}, "Init:Signal:9")],
)
def test_an_init_container_that_failed_without_a_reason(
    terminated: dict[str, int], status: str
) -> None:
    pod = msgspec.convert(
        {
            "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}]},
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [{"name": "migrate", "state": {"terminated": terminated}}],
            },
        },
        Pod,
    )
    assert display_status(pod).status == status


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (59, "59s"),
        (119, "119s"),
        (122, "2m2s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 30 * 60, "5h30m"),
        (47 * 3600, "47h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400, "3y"),
        (3 * 365 * 86400 + 5 * 86400, "3y5d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_is_kubectls(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
