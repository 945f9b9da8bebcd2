"""Workload identity: label priority, then the owner walk through watched ReplicaSets and Jobs."""

from __future__ import annotations

import pytest

from podindex.identity import controller_of, resolve_workload, top_level_owner
from podindex.model import ObjectMeta, OwnerRecord, OwnerReference

RS = OwnerReference(kind="ReplicaSet", name="web-7c9d8", uid="rs-1", controller=True)
JOB = OwnerReference(kind="Job", name="backup-29000", uid="job-1", controller=True)
DEPLOYMENT = OwnerReference(kind="Deployment", name="web", uid="dep-1", controller=True)
CRONJOB = OwnerReference(kind="CronJob", name="backup", uid="cj-1", controller=True)


def meta(
    *refs: OwnerReference, labels: dict[str, str] | None = None, name: str = "pod-x"
) -> ObjectMeta:
    return ObjectMeta(
        name=name, namespace="ns", uid="pod-uid", labels=labels or {}, ownerReferences=list(refs)
    )


def owner(
    ref: OwnerReference, parent: OwnerReference | None, kind: str = ""
) -> dict[str, OwnerRecord]:
    record = OwnerRecord(
        cluster="c",
        kind=kind or ref.kind,  # type: ignore[arg-type]
        namespace="ns",
        name=ref.name,
        uid=ref.uid,
        owner=parent,
    )
    return {ref.uid: record}


def test_controller_reference_is_preferred() -> None:
    other = OwnerReference(kind="Node", name="n", uid="n-1", controller=False)
    assert controller_of(meta(other, RS)) is RS
    assert controller_of(meta(other)) is other
    assert controller_of(meta()) is None


@pytest.mark.parametrize(
    ("refs", "labels", "owners", "expected"),
    [
        pytest.param((), {}, {}, ("", ""), id="bare pod"),
        pytest.param((RS,), {}, owner(RS, DEPLOYMENT), ("Deployment", "web"), id="rs->deployment"),
        pytest.param((RS,), {}, owner(RS, None), ("ReplicaSet", "web-7c9d8"), id="bare rs"),
        pytest.param(
            (RS,), {"pod-template-hash": "7c9d8"}, {}, ("Deployment", "web"), id="rs unknown, hash"
        ),
        pytest.param((RS,), {}, {}, ("ReplicaSet", "web-7c9d8"), id="rs unknown, no hash"),
        pytest.param(
            (RS,),
            {"pod-template-hash": "other"},
            {},
            ("ReplicaSet", "web-7c9d8"),
            id="hash not the suffix",
        ),
        pytest.param(
            (RS,),
            {"pod-template-hash": "7c9d8"},
            owner(
                RS,
                DEPLOYMENT.__class__(kind="Deployment", name="renamed", uid="d2", controller=True),
            ),
            ("Deployment", "renamed"),
            id="known rs beats inference",
        ),
        pytest.param((JOB,), {}, owner(JOB, CRONJOB), ("CronJob", "backup"), id="job->cronjob"),
        pytest.param((JOB,), {}, owner(JOB, None), ("Job", "backup-29000"), id="bare job"),
        pytest.param((JOB,), {}, {}, ("Job", "backup-29000"), id="job unknown"),
        pytest.param(
            (OwnerReference(kind="StatefulSet", name="db", uid="s", controller=True),),
            {},
            {},
            ("StatefulSet", "db"),
            id="statefulset",
        ),
        pytest.param(
            (OwnerReference(kind="DaemonSet", name="agent", uid="d", controller=True),),
            {},
            {},
            ("DaemonSet", "agent"),
            id="daemonset",
        ),
    ],
)
def test_top_level_owner(
    refs: tuple[OwnerReference, ...],
    labels: dict[str, str],
    owners: dict[str, OwnerRecord],
    expected: tuple[str, str],
) -> None:
    assert top_level_owner(meta(*refs, labels=labels), owners) == expected


def test_owner_records_are_matched_by_uid_not_name() -> None:
    elsewhere = OwnerReference(
        kind="ReplicaSet", name="web-7c9d8", uid="another-rs", controller=True
    )
    assert top_level_owner(meta(RS), owner(elsewhere, DEPLOYMENT)) == ("ReplicaSet", "web-7c9d8")


@pytest.mark.parametrize(
    ("labels", "identity", "source"),
    [
        (
            {"app.kubernetes.io/name": "shop", "app.kubernetes.io/component": "db", "k8s-app": "k"},
            "shop",
            "label:app.kubernetes.io/name",
        ),
        (
            {"app.kubernetes.io/component": "db", "k8s-app": "k"},
            "db",
            "label:app.kubernetes.io/component",
        ),
        ({"k8s-app": "kube-dns"}, "kube-dns", "label:k8s-app"),
        # An empty label value names nothing: fall through to the next source.
        ({"app.kubernetes.io/name": "", "k8s-app": "k"}, "k", "label:k8s-app"),
        ({"app": "web"}, "web", "owner"),
    ],
)
def test_identity_priority(labels: dict[str, str], identity: str, source: str) -> None:
    workload = resolve_workload(meta(RS, labels=labels), owner(RS, DEPLOYMENT))
    assert (workload.identity, workload.identity_source) == (identity, source)
    assert (workload.kind, workload.name) == ("Deployment", "web")


def test_label_identity_selects_by_that_label() -> None:
    workload = resolve_workload(meta(labels={"k8s-app": "kube-dns", "pod-template-hash": "x"}), {})
    assert workload.selector_labels == {"k8s-app": "kube-dns"}


def test_owner_identity_selects_by_the_pods_own_labels_without_controller_ones() -> None:
    labels = {
        "app": "web",
        "tier": "front",
        "pod-template-hash": "7c9d8",
        "controller-revision-hash": "abc",
        "statefulset.kubernetes.io/pod-name": "web-0",
        "batch.kubernetes.io/job-name": "j",
        "job-name": "j",
        "controller-uid": "u",
    }
    workload = resolve_workload(meta(RS, labels=labels), owner(RS, DEPLOYMENT))
    assert workload.selector_labels == {"app": "web", "tier": "front"}


def test_bare_pod_is_named_after_itself() -> None:
    workload = resolve_workload(meta(labels={"run": "debug"}, name="debug-shell"), {})
    assert (workload.identity, workload.identity_source, workload.kind, workload.name) == (
        "debug-shell",
        "pod",
        "",
        "",
    )
    assert workload.selector_labels == {"run": "debug"}
