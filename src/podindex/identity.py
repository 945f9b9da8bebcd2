"""Workload identity: which workload a pod belongs to, without an API call per pod.

The priority is the broker's (seeds/broker-pod-endpoints.txt): the
``app.kubernetes.io/name`` label, then ``app.kubernetes.io/component``, then
``k8s-app``, then the owner walk to the top-level controller. The walk goes
through watched ReplicaSets and Jobs (metadata only) to their Deployment or
CronJob. When the ReplicaSet is not known yet (its watch event can arrive
after the pod's), a Deployment name is inferred from the ReplicaSet name and
the pod's ``pod-template-hash`` label, as the OpenTelemetry k8sattributes
processor does; the index recomputes identities when the owner arrives.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping

from podindex.model import ObjectMeta, OwnerRecord, OwnerReference, Workload

IDENTITY_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "k8s-app")

# Labels that controllers stamp on each pod; they identify one pod or one
# revision, so they are not part of the workload's selector.
CONTROLLER_LABELS = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "controller-uid",
        "job-name",
        "batch.kubernetes.io/controller-uid",
        "batch.kubernetes.io/job-name",
        "batch.kubernetes.io/job-completion-index",
    }
)


def controller_of(meta: ObjectMeta) -> OwnerReference | None:
    """The owner reference marked ``controller``, else the first one, else ``None``."""
    refs = meta.ownerReferences
    if not refs:
        return None
    for ref in refs:
        if ref.controller:
            return ref
    return refs[0]


def top_level_owner(meta: ObjectMeta, owners: Mapping[str, OwnerRecord]) -> tuple[str, str]:
    """(kind, name) of the pod's top-level controller, or ("", "") for a bare pod.

    ``owners`` maps a ReplicaSet's or Job's uid to its record, for this
    pod's cluster.
    """
    ref = controller_of(meta)
    if ref is None:
        return "", ""
    if ref.kind in ("ReplicaSet", "Job"):
        known = owners.get(ref.uid)
        if known is not None:
            parent = known.owner
            if parent is not None and parent.kind in ("Deployment", "CronJob"):
                return parent.kind, parent.name
            return ref.kind, ref.name
        if ref.kind == "ReplicaSet":
            template_hash = meta.labels.get("pod-template-hash", "")
            suffix = "-" + template_hash
            if template_hash and ref.name.endswith(suffix):
                return "Deployment", ref.name[: -len(suffix)]
    return ref.kind, ref.name


def resolve_workload(meta: ObjectMeta, owners: Mapping[str, OwnerRecord]) -> Workload:
    """The pod's workload identity and the selector labels that pick its workload."""
    kind, name = top_level_owner(meta, owners)
    labels = meta.labels
    for key in IDENTITY_LABELS:
        value = labels.get(key)
        if value:
            return Workload(
                identity=value,
                identity_source="label:" + key,
                kind=kind,
                name=name,
                selector_labels={key: value},
            )
    selector = {k: v for k, v in labels.items() if k not in CONTROLLER_LABELS}
    if kind:
        return Workload(
            identity=name, identity_source="owner", kind=kind, name=name, selector_labels=selector
        )
    return Workload(
        identity=meta.name, identity_source="pod", kind="", name="", selector_labels=selector
    )
