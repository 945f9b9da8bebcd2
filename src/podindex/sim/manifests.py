"""Builders for realistic Kubernetes object manifests, shaped like kube-apiserver v1.36 output.

The emulator must hand clients objects that look like the real recordings in
``../shared/k8s-recordings`` (field order, managedFields, projected token
volume, tolerations, kubelet-written status), because podindex decodes them
with the same code it runs against a real cluster. Everything here is a pure
function from parameters to a JSON-ready dict; :class:`ByteTemplate` turns one
such dict into a reusable byte template so that bulk loads (100k pods) do not
pay for building and encoding a nested dict per object.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

JSON = dict[str, Any]

IMAGE_DIGEST = "sha256:" + "ab" * 32
API_VERSION_OF_KIND = {
    "Pod": "v1",
    "Node": "v1",
    "ReplicaSet": "apps/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}

# Go struct field order of the types we emit; encoding/json writes fields in this
# order, so a dict mutated by a test is re-sorted into it before encoding.
OBJECT_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
POD_SPEC_ORDER = (
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
)
POD_STATUS_ORDER = (
    "observedGeneration",
    "phase",
    "conditions",
    "message",
    "reason",
    "nominatedNodeName",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
    "qosClass",
    "ephemeralContainerStatuses",
    "resize",
    "resourceClaimStatuses",
)
TOP_LEVEL_ORDER = ("kind", "apiVersion", "metadata", "spec", "status")


def rfc3339(epoch_seconds: float | None = None) -> str:
    """Kubernetes' second-precision timestamp form: 2026-11-23T12:56:34Z."""
    t = time.time() if epoch_seconds is None else epoch_seconds
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _ordered(d: Mapping[str, Any], order: Sequence[str]) -> JSON:
    known = {k: d[k] for k in order if k in d}
    known.update((k, v) for k, v in d.items() if k not in known)
    return known


def _managed_fields_sort_key(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (
        str(entry.get("operation", "")),
        str(entry.get("time", "")),
        str(entry.get("manager", "")),
        str(entry.get("subresource", "")),
    )


def canonical_order(obj: Mapping[str, Any]) -> JSON:
    """Re-sort a (possibly mutated) object's keys into the order the API server emits.

    managedFields entries are sorted as the API server's encoder does: by
    operation, then time, then manager, then subresource.
    """
    out = _ordered(obj, TOP_LEVEL_ORDER)
    if isinstance(out.get("metadata"), dict):
        meta = _ordered(out["metadata"], OBJECT_META_ORDER)
        if isinstance(meta.get("managedFields"), list):
            meta["managedFields"] = sorted(meta["managedFields"], key=_managed_fields_sort_key)
        out["metadata"] = meta
    if obj.get("kind", "Pod") == "Pod" or "containers" in out.get("spec", {}):
        if isinstance(out.get("spec"), dict):
            out["spec"] = _ordered(out["spec"], POD_SPEC_ORDER)
        if isinstance(out.get("status"), dict):
            out["status"] = _ordered(out["status"], POD_STATUS_ORDER)
    return out


def owner_reference(kind: str, name: str, uid: str) -> JSON:
    return {
        "apiVersion": API_VERSION_OF_KIND.get(kind, "v1"),
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def sorted_fields(d: Mapping[str, Any]) -> JSON:
    """fieldsV1 sets are serialised with keys sorted ('.' first, then f:, k:, v:)."""
    return {k: sorted_fields(v) if isinstance(v, dict) else v for k, v in sorted(d.items())}


def _managed_entry(
    manager: str, api_version: str, when: str, fields: JSON, subresource: str | None = None
) -> JSON:
    entry: JSON = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": when,
        "fieldsType": "FieldsV1",
        "fieldsV1": sorted_fields(fields),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _set_of(keys: Sequence[str]) -> JSON:
    return {".": {}, **{f"f:{k}": {} for k in keys}}


@dataclass(slots=True)
class ContainerParams:
    name: str = "app"
    image: str = "registry.example/app:1.0"
    container_id: str = "containerd://" + "0" * 48 + "2414f26fec7a0220"
    restart_count: int = 0
    started_at: str | None = None

    @property
    def image_id(self) -> str:
        repo = self.image.rsplit(":", 1)[0] if ":" in self.image.rsplit("/", 1)[-1] else self.image
        return f"{repo}@{IMAGE_DIGEST}"


@dataclass(slots=True)
class PodParams:
    namespace: str
    name: str
    uid: str
    resource_version: str
    created: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner: JSON | None = None
    generate_name: str | None = None
    finalizers: Sequence[str] = ()
    node: str | None = None
    host_ip: str | None = None
    pod_ips: Sequence[str] = ()
    host_network: bool = False
    phase: str = "Running"
    containers: Sequence[ContainerParams] = (ContainerParams(),)
    restart_policy: str = "Always"
    volume_suffix: str = "abcde"
    started: str | None = None
    manager: str = "kubectl-create"


def _pod_spec(p: PodParams) -> JSON:
    volume = f"kube-api-access-{p.volume_suffix}"
    spec: JSON = {
        "volumes": [
            {
                "name": volume,
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {
                                            "apiVersion": "v1",
                                            "fieldPath": "metadata.namespace",
                                        },
                                    }
                                ]
                            }
                        },
                        {
                            "configMap": {
                                "name": "openshift-service-ca.crt",
                                "items": [{"key": "service-ca.crt", "path": "service-ca.crt"}],
                            }
                        },
                    ],
                    "defaultMode": 420,
                },
            }
        ],
        "containers": [
            {
                "name": c.name,
                "image": c.image,
                "resources": {},
                "volumeMounts": [
                    {
                        "name": volume,
                        "readOnly": True,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    }
                ],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }
            for c in p.containers
        ],
        "restartPolicy": p.restart_policy,
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirstWithHostNet" if p.host_network else "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
    }
    if p.node:
        spec["nodeName"] = p.node
    if p.host_network:
        spec["hostNetwork"] = True
    spec.update(
        {
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        }
    )
    return spec


def _conditions(ready: bool, when: str) -> list[JSON]:
    def cond(kind: str, ok: bool) -> JSON:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": when,
        }

    return [
        cond("PodReadyToStartContainers", True),
        cond("Initialized", True),
        cond("Ready", ready),
        cond("ContainersReady", ready),
        cond("PodScheduled", True),
    ]


def container_statuses(p: PodParams, when: str) -> list[JSON]:
    out: list[JSON] = []
    terminal = p.phase in ("Succeeded", "Failed")
    for c in p.containers:
        started = c.started_at or p.started or when
        if terminal:
            state: JSON = {
                "terminated": {
                    "exitCode": 0 if p.phase == "Succeeded" else 1,
                    "reason": "Completed" if p.phase == "Succeeded" else "Error",
                    "startedAt": started,
                    "finishedAt": when,
                    "containerID": c.container_id,
                }
            }
        else:
            state = {"running": {"startedAt": started}}
        out.append(
            {
                "name": c.name,
                "state": state,
                "lastState": {},
                "ready": not terminal,
                "restartCount": c.restart_count,
                "image": c.image,
                "imageID": c.image_id,
                "containerID": c.container_id,
                "started": not terminal,
            }
        )
    return out


def _pod_status(p: PodParams) -> JSON:
    if p.phase == "Pending" or not p.node:
        return {"phase": p.phase, "qosClass": "BestEffort"}
    when = p.started or p.created
    status: JSON = {
        "phase": p.phase,
        "conditions": _conditions(p.phase == "Running", when),
    }
    if p.host_ip:
        status["hostIP"] = p.host_ip
        status["hostIPs"] = [{"ip": p.host_ip}]
    if p.pod_ips:
        status["podIP"] = p.pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in p.pod_ips]
    status["startTime"] = when
    status["containerStatuses"] = container_statuses(p, when)
    status["qosClass"] = "BestEffort"
    return status


def pod_status_managed_fields(pod_ips: Sequence[str], when: str, manager: str = "kubelet") -> JSON:
    condition_fields = _set_of(["lastProbeTime", "lastTransitionTime", "status", "type"])
    conditions: JSON = {".": {}}
    for kind in (
        "ContainersReady",
        "Initialized",
        "PodReadyToStartContainers",
        "PodScheduled",
        "Ready",
    ):
        conditions[f'k:{{"type":"{kind}"}}'] = dict(condition_fields)
    status: JSON = {
        "f:conditions": conditions,
        "f:containerStatuses": {},
        "f:hostIP": {},
        "f:hostIPs": {},
        "f:phase": {},
        "f:startTime": {},
    }
    if pod_ips:
        status["f:podIP"] = {}
        status["f:podIPs"] = {".": {}, **{f'k:{{"ip":"{ip}"}}': _set_of(["ip"]) for ip in pod_ips}}
    return _managed_entry(manager, "v1", when, {"f:status": status}, subresource="status")


def _pod_managed_fields(p: PodParams) -> list[JSON]:
    meta_fields: JSON = {}
    if p.generate_name:
        meta_fields["f:generateName"] = {}
    if p.labels:
        meta_fields["f:labels"] = _set_of(list(p.labels))
    if p.annotations:
        meta_fields["f:annotations"] = _set_of(list(p.annotations))
    if p.owner:
        meta_fields["f:ownerReferences"] = {".": {}, f'k:{{"uid":"{p.owner["uid"]}"}}': {}}
    if p.finalizers:
        meta_fields["f:finalizers"] = {".": {}, **{f'v:"{f}"': {} for f in p.finalizers}}
    container_fields = _set_of(
        [
            "image",
            "imagePullPolicy",
            "name",
            "resources",
            "terminationMessagePath",
            "terminationMessagePolicy",
        ]
    )
    spec_fields: JSON = {
        "f:containers": {f'k:{{"name":"{c.name}"}}': dict(container_fields) for c in p.containers},
        "f:dnsPolicy": {},
        "f:enableServiceLinks": {},
        "f:restartPolicy": {},
        "f:schedulerName": {},
        "f:securityContext": {},
        "f:terminationGracePeriodSeconds": {},
    }
    if p.node:
        spec_fields["f:nodeName"] = {}
    if p.host_network:
        spec_fields["f:hostNetwork"] = {}
    fields: JSON = {"f:spec": spec_fields}
    if meta_fields:
        fields["f:metadata"] = meta_fields
    entries = [_managed_entry(p.manager, "v1", p.created, fields)]
    if p.node and p.phase != "Pending":
        entries.append(pod_status_managed_fields(p.pod_ips, p.started or p.created))
    return entries


def refresh_managed_fields(
    obj: JSON, *, metadata_changed: bool, status_changed: bool, when: str
) -> None:
    """Record an update the way server-side field management does.

    The writer of the main entry (the object's creator here) now owns the current
    label/annotation keys, and the entry touched by the write gets the write's time.
    """
    meta = obj["metadata"]
    entries: list[JSON] = meta.get("managedFields") or []
    if metadata_changed:
        main = next((e for e in entries if not e.get("subresource")), None)
        if main is not None:
            fields = main["fieldsV1"].setdefault("f:metadata", {})
            for key in ("labels", "annotations"):
                if meta.get(key):
                    fields[f"f:{key}"] = _set_of(list(meta[key]))
                else:
                    fields.pop(f"f:{key}", None)
            main["fieldsV1"] = sorted_fields(main["fieldsV1"])
            main["time"] = when
    if status_changed:
        status_entry = next((e for e in entries if e.get("subresource") == "status"), None)
        if status_entry is not None:
            status_entry["time"] = when


def build_pod(p: PodParams) -> JSON:
    """A pod as the API server stores it (list-item form: no kind/apiVersion)."""
    meta: JSON = {"name": p.name}
    if p.generate_name:
        meta["generateName"] = p.generate_name
    meta.update(
        {
            "namespace": p.namespace,
            "uid": p.uid,
            "resourceVersion": p.resource_version,
            "generation": 1,
            "creationTimestamp": p.created,
        }
    )
    if p.labels:
        meta["labels"] = dict(p.labels)
    if p.annotations:
        meta["annotations"] = dict(p.annotations)
    if p.owner:
        meta["ownerReferences"] = [p.owner]
    if p.finalizers:
        meta["finalizers"] = list(p.finalizers)
    meta["managedFields"] = _pod_managed_fields(p)
    return {"metadata": meta, "spec": _pod_spec(p), "status": _pod_status(p)}


def _template_spec(labels: Mapping[str, str], image: str = "registry.example/app:1.0") -> JSON:
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        },
    }


def _template_managed_fields(labels: Sequence[str]) -> JSON:
    container_fields = _set_of(
        [
            "image",
            "imagePullPolicy",
            "name",
            "resources",
            "terminationMessagePath",
            "terminationMessagePolicy",
        ]
    )
    return {
        "f:metadata": {"f:labels": _set_of(labels)},
        "f:spec": {
            "f:containers": {'k:{"name":"app"}': container_fields},
            "f:dnsPolicy": {},
            "f:restartPolicy": {},
            "f:schedulerName": {},
            "f:securityContext": {},
            "f:terminationGracePeriodSeconds": {},
        },
    }


def build_replicaset(
    *,
    namespace: str,
    name: str,
    uid: str,
    resource_version: str,
    created: str,
    labels: Mapping[str, str],
    replicas: int,
    owner: JSON | None,
    generation: int = 1,
) -> JSON:
    """A ReplicaSet as kube-controller-manager writes it for a Deployment (see recording 50)."""
    meta: JSON = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": resource_version,
        "generation": generation,
        "creationTimestamp": created,
    }
    if labels:
        meta["labels"] = dict(labels)
    if owner:
        meta["annotations"] = {
            "deployment.kubernetes.io/desired-replicas": str(replicas),
            "deployment.kubernetes.io/max-replicas": str(replicas + 1),
            "deployment.kubernetes.io/revision": "1",
        }
        meta["ownerReferences"] = [owner]
    spec_fields: JSON = {"f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {}}}
    spec_fields["f:spec"]["f:template"] = _template_managed_fields(list(labels))
    manager = "kube-controller-manager" if owner else "kubectl-create"
    if owner:
        spec_fields["f:metadata"] = {
            "f:annotations": _set_of(
                [
                    "deployment.kubernetes.io/desired-replicas",
                    "deployment.kubernetes.io/max-replicas",
                    "deployment.kubernetes.io/revision",
                ]
            ),
            "f:labels": _set_of(list(labels)),
            "f:ownerReferences": {".": {}, f'k:{{"uid":"{owner["uid"]}"}}': {}},
        }
    status_fields: JSON = {
        "f:status": {
            "f:availableReplicas": {},
            "f:fullyLabeledReplicas": {},
            "f:observedGeneration": {},
            "f:readyReplicas": {},
            "f:replicas": {},
            "f:terminatingReplicas": {},
        }
    }
    meta["managedFields"] = [
        _managed_entry(manager, "apps/v1", created, spec_fields),
        _managed_entry("kube-controller-manager", "apps/v1", created, status_fields, "status"),
    ]
    return {
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": _template_spec(labels),
        },
        "status": {
            "replicas": replicas,
            "fullyLabeledReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "terminatingReplicas": 0,
            "observedGeneration": generation,
        },
    }


def job_pod_labels(job_name: str, job_uid: str, extra: Mapping[str, str]) -> JSON:
    return {
        **extra,
        "batch.kubernetes.io/controller-uid": job_uid,
        "batch.kubernetes.io/job-name": job_name,
        "controller-uid": job_uid,
        "job-name": job_name,
    }


def build_job(
    *,
    namespace: str,
    name: str,
    uid: str,
    resource_version: str,
    created: str,
    labels: Mapping[str, str],
    owner: JSON | None,
    active: int = 1,
    succeeded: int = 0,
) -> JSON:
    """A batch/v1 Job with the labels the Job controller adds (see recording 51)."""
    all_labels = job_pod_labels(name, uid, labels)
    meta: JSON = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": resource_version,
        "generation": 1,
        "creationTimestamp": created,
        "labels": all_labels,
    }
    if owner:
        meta["ownerReferences"] = [owner]
    spec_fields: JSON = {
        "f:spec": {
            "f:backoffLimit": {},
            "f:completionMode": {},
            "f:completions": {},
            "f:manualSelector": {},
            "f:parallelism": {},
            "f:podReplacementPolicy": {},
            "f:suspend": {},
            "f:template": _template_managed_fields(list(labels)),
        }
    }
    if labels:
        spec_fields["f:metadata"] = {"f:labels": _set_of(list(labels))}
    status: JSON = {"startTime": created}
    if active:
        status["active"] = active
    if succeeded:
        status["succeeded"] = succeeded
        status["completionTime"] = created
    status["terminating"] = 0
    status["uncountedTerminatedPods"] = {}
    status["ready"] = 0
    status_fields: JSON = {
        "f:status": {
            "f:active": {},
            "f:ready": {},
            "f:startTime": {},
            "f:terminating": {},
            "f:uncountedTerminatedPods": {},
        }
    }
    meta["managedFields"] = [
        _managed_entry("kube-controller-manager", "batch/v1", created, status_fields, "status"),
        _managed_entry(
            "kube-controller-manager" if owner else "kubectl-create",
            "batch/v1",
            created,
            spec_fields,
        ),
    ]
    template = _template_spec(all_labels)
    template["spec"]["restartPolicy"] = "Never"
    return {
        "metadata": meta,
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 6,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
            "manualSelector": False,
            "template": template,
            "completionMode": "NonIndexed",
            "suspend": False,
            "podReplacementPolicy": "TerminatingOrFailed",
        },
        "status": status,
    }


def build_node(
    *,
    name: str,
    uid: str,
    resource_version: str,
    created: str,
    ip: str,
    labels: Mapping[str, str],
    pod_cidr: str | None,
) -> JSON:
    """A Ready Node with an InternalIP address (what a kubelet registers)."""
    all_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        **labels,
    }
    spec: JSON = {}
    if pod_cidr:
        spec = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "resourceVersion": resource_version,
            "creationTimestamp": created,
            "labels": all_labels,
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            "managedFields": [
                _managed_entry(
                    "kubelet",
                    "v1",
                    created,
                    {"f:metadata": {"f:labels": _set_of(sorted(all_labels))}},
                ),
                _managed_entry(
                    "kubelet",
                    "v1",
                    created,
                    {"f:status": {"f:addresses": {}, "f:conditions": {}}},
                    "status",
                ),
            ],
        },
        "spec": spec,
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": created,
                    "lastTransitionTime": created,
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "6.8.0",
                "osImage": "Podindex Sim Linux",
                "containerRuntimeVersion": "containerd://2.1.0",
                "kubeletVersion": "v1.36.2",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


# --- byte templates ---------------------------------------------------------------

_INLINE = "\x01"
_WHOLE = "\x02"
_SLOT = re.compile(rb'"\\u0002(\w+)\\u0002"|\\u0001(\w+)\\u0001')
_encode = msgspec.json.encode


def inline_slot(name: str) -> str:
    """Placeholder for a string (or part of one) that is filled in at render time."""
    return f"{_INLINE}{name}{_INLINE}"


def whole_slot(name: str) -> str:
    """Placeholder for a whole JSON value (dict, list, number) filled in at render time."""
    return f"{_WHOLE}{name}{_WHOLE}"


class ByteTemplate:
    """An encoded object split around named placeholders, rendered by byte joins.

    Why: encoding a 5 KB nested dict per pod costs far more than joining a few
    dozen byte strings, and a 100k-pod benchmark cluster must load in seconds.
    The template is made by encoding the output of the ordinary builder with
    placeholders, so rendered objects have exactly the builder's shape.
    """

    __slots__ = ("_literals", "_names", "_slots")

    def __init__(self, obj: Any) -> None:
        encoded = _encode(obj)
        literals: list[bytes] = []
        slots: list[tuple[str, bool]] = []
        pos = 0
        for m in _SLOT.finditer(encoded):
            literals.append(encoded[pos : m.start()])
            whole, inline = m.group(1), m.group(2)
            slots.append(((whole or inline).decode(), whole is not None))
            pos = m.end()
        literals.append(encoded[pos:])
        self._literals = literals
        self._slots = slots
        self._names = [name for name, _ in slots]

    @property
    def slot_names(self) -> set[str]:
        return {name for name, _ in self._slots}

    def render_trusted(self, values: Mapping[str, bytes]) -> bytes:
        """Fill slots with caller-encoded bytes (JSON-safe string content, or JSON values).

        The fast path for bulk loads whose values are known to need no escaping.
        """
        parts: list[bytes] = [b""] * (2 * len(self._names) + 1)
        parts[0::2] = self._literals
        parts[1::2] = [values[name] for name in self._names]
        return b"".join(parts)

    def render(self, values: Mapping[str, Any]) -> bytes:
        parts: list[bytes] = []
        literals = self._literals
        for i, (name, whole) in enumerate(self._slots):
            parts.append(literals[i])
            encoded = _encode(values[name])
            parts.append(encoded if whole else encoded[1:-1])
        parts.append(literals[-1])
        return b"".join(parts)
