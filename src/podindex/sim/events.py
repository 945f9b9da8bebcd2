"""Kubernetes Events in both APIs, core/v1 and events.k8s.io/v1, over one store.

The dashboard shows a pod's events from legacy core events (kubelet: count,
firstTimestamp/lastTimestamp) and from events.k8s.io (scheduler and newer
controllers: eventTime, series). kube-apiserver stores one object and converts
it for each API, so an event created through either API is listed by both
(recordings 60-65). This module is that conversion, the validation on create,
the selectable fields and the field-label mapping, as pure functions over
JSON dicts in the Go structs' field order. Objects are stored in core/v1 form.

Known differences from a real server: validation covers the common rules
(namespace agreement, required fields of new-style events, type, deprecated
fields unset on events.k8s.io creates) but not name syntax or length limits;
``fieldsV1`` in managedFields lists the top-level fields sent (one level deep
for ``source``/``series``), which is what the recordings show.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from podindex.sim import status as st
from podindex.sim.logs import NS, parse_rfc3339

JSON = dict[str, Any]
EVENTS_GROUP = "events.k8s.io"
REF_ORDER = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
ATOMIC = frozenset({"involvedObject", "regarding", "related"})

V1_FIELD_LABELS = {
    "metadata.name": "metadata.name",
    "metadata.namespace": "metadata.namespace",
    "reason": "reason",
    "regarding.kind": "involvedObject.kind",
    "regarding.namespace": "involvedObject.namespace",
    "regarding.name": "involvedObject.name",
    "regarding.uid": "involvedObject.uid",
    "regarding.apiVersion": "involvedObject.apiVersion",
    "regarding.resourceVersion": "involvedObject.resourceVersion",
    "regarding.fieldPath": "involvedObject.fieldPath",
    "reportingController": "reportingComponent",
    "type": "type",
}


class InvalidEvent(Exception):
    """The create is rejected with this Status body."""

    def __init__(self, body: JSON) -> None:
        super().__init__(body.get("message", ""))
        self.body = body


def time_seconds(epoch: float | None = None) -> str:
    """metav1.Time: RFC 3339 in whole seconds."""
    t = time.time() if epoch is None else epoch
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def micro_time(epoch_ns: int | None = None) -> str:
    """metav1.MicroTime: RFC 3339 with six fixed fractional digits."""
    ns = time.time_ns() if epoch_ns is None else epoch_ns
    seconds, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac // 1000:06d}Z"


def _norm_time(value: object, *, micro: bool) -> str | None:
    if not value:
        return None
    ns = parse_rfc3339(str(value))
    return micro_time(ns) if micro else time_seconds(ns // NS)


def _ref(value: object) -> JSON:
    src = value if isinstance(value, Mapping) else {}
    return {k: src[k] for k in REF_ORDER if src.get(k)}


def _source(value: object) -> JSON:
    src = value if isinstance(value, Mapping) else {}
    return {k: src[k] for k in ("component", "host") if src.get(k)}


def _series(value: object) -> JSON | None:
    if not isinstance(value, Mapping) or not value:
        return None
    return {
        "count": int(value.get("count", 0)),
        "lastObservedTime": _norm_time(value.get("lastObservedTime"), micro=True),
    }


def core_event(meta: JSON, src: Mapping[str, Any]) -> JSON:
    """A core/v1 Event (list-item form, Go field order) from loose core-shaped fields."""
    out: JSON = {"metadata": meta, "involvedObject": _ref(src.get("involvedObject"))}
    for key in ("reason", "message"):
        if src.get(key):
            out[key] = src[key]
    out["source"] = _source(src.get("source"))
    out["firstTimestamp"] = _norm_time(src.get("firstTimestamp"), micro=False)
    out["lastTimestamp"] = _norm_time(src.get("lastTimestamp"), micro=False)
    if src.get("count"):
        out["count"] = int(src["count"])
    if src.get("type"):
        out["type"] = src["type"]
    out["eventTime"] = _norm_time(src.get("eventTime"), micro=True)
    series = _series(src.get("series"))
    if series is not None:
        out["series"] = series
    if src.get("action"):
        out["action"] = src["action"]
    if src.get("related"):
        out["related"] = _ref(src["related"])
    out["reportingComponent"] = src.get("reportingComponent") or ""
    out["reportingInstance"] = src.get("reportingInstance") or ""
    return out


def core_fields_of_v1(body: Mapping[str, Any]) -> JSON:
    """An events.k8s.io/v1 body's fields under their core/v1 names (Convert_v1_Event_To_core_Event)."""
    return {
        "involvedObject": body.get("regarding"),
        "reason": body.get("reason"),
        "message": body.get("note"),
        "source": body.get("deprecatedSource"),
        "firstTimestamp": body.get("deprecatedFirstTimestamp"),
        "lastTimestamp": body.get("deprecatedLastTimestamp"),
        "count": body.get("deprecatedCount"),
        "type": body.get("type"),
        "eventTime": body.get("eventTime"),
        "series": body.get("series"),
        "action": body.get("action"),
        "related": body.get("related"),
        "reportingComponent": body.get("reportingController"),
        "reportingInstance": body.get("reportingInstance"),
    }


def v1_event(core: Mapping[str, Any]) -> JSON:
    """The events.k8s.io/v1 form (list-item, Go field order) of a stored core/v1 Event."""
    out: JSON = {"metadata": core["metadata"], "eventTime": core.get("eventTime")}
    if core.get("series"):
        out["series"] = core["series"]
    if core.get("reportingComponent"):
        out["reportingController"] = core["reportingComponent"]
    for key in ("reportingInstance", "action", "reason"):
        if core.get(key):
            out[key] = core[key]
    out["regarding"] = core.get("involvedObject") or {}
    if core.get("related"):
        out["related"] = core["related"]
    if core.get("message"):
        out["note"] = core["message"]
    if core.get("type"):
        out["type"] = core["type"]
    out["deprecatedSource"] = core.get("source") or {}
    out["deprecatedFirstTimestamp"] = core.get("firstTimestamp")
    out["deprecatedLastTimestamp"] = core.get("lastTimestamp")
    if core.get("count"):
        out["deprecatedCount"] = core["count"]
    return out


def selectable_fields(core: Mapping[str, Any]) -> dict[str, str]:
    """EventToSelectableFields: what core field selectors (and mapped v1 ones) match on."""
    meta = core["metadata"]
    ref = core.get("involvedObject") or {}
    source = (core.get("source") or {}).get("component") or core.get("reportingComponent") or ""
    fields = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta.get("namespace", ""),
        "reason": core.get("reason", ""),
        "reportingComponent": core.get("reportingComponent", ""),
        "source": source,
        "type": core.get("type", ""),
    }
    for key in REF_ORDER:
        fields[f"involvedObject.{key}"] = str(ref.get(key, ""))
    return fields


def fields_v1(body: Mapping[str, Any]) -> JSON:
    """managedFields' fieldsV1 for the fields a create request set."""
    out: JSON = {}
    meta = body.get("metadata") or {}
    meta_fields: JSON = {}
    for key in ("labels", "annotations"):
        if meta.get(key):
            meta_fields[f"f:{key}"] = {".": {}, **{f"f:{k}": {} for k in sorted(meta[key])}}
    if meta_fields:
        out["f:metadata"] = meta_fields
    for key, value in body.items():
        if key in ("kind", "apiVersion", "metadata") or value in (None, "", 0, {}, []):
            continue
        if isinstance(value, Mapping) and key not in ATOMIC:
            out[f"f:{key}"] = {f"f:{k}": {} for k in sorted(value) if value[k] not in (None, "")}
        else:
            out[f"f:{key}"] = {}
    return dict(sorted(out.items()))


def managed_entry(manager: str, api_version: str, when: str, body: Mapping[str, Any]) -> JSON:
    return {
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": when,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(body),
    }


def _required(field: str) -> tuple[str, str, str]:
    return field, "FieldValueRequired", "Required value"


def _invalid(field: str, value: str, detail: str) -> tuple[str, str, str]:
    return field, "FieldValueInvalid", f'Invalid value: "{value}": {detail}'


def validate(core: Mapping[str, Any], *, v1_request: bool) -> list[tuple[str, str, str]]:
    """ValidateEventCreate (the common rules): [(field, cause reason, cause message)]."""
    errs: list[tuple[str, str, str]] = []
    meta = core["metadata"]
    namespace = meta.get("namespace", "")
    ref_ns = (core.get("involvedObject") or {}).get("namespace", "")
    controller_field = "reportingController" if v1_request else "reportingComponent"
    if not core.get("eventTime"):
        if (ref_ns and namespace != ref_ns) or (not ref_ns and namespace not in ("", "default")):
            errs.append(
                _invalid("involvedObject.namespace", ref_ns, "does not match event.namespace")
            )
    else:
        if not ref_ns and namespace not in ("default", "kube-system"):
            errs.append(
                _invalid("involvedObject.namespace", ref_ns, "does not match event.namespace")
            )
        if not core.get("reportingComponent"):
            errs.append(_required(controller_field))
        if not core.get("reportingInstance"):
            errs.append(_required("reportingInstance"))
        if not core.get("action"):
            errs.append(_required("action"))
        if not core.get("reason"):
            errs.append(_required("reason"))
        if len(core.get("message", "")) > 1024:
            errs.append(
                ("note", "FieldValueInvalid", 'Invalid value: "": can have at most 1024 characters')
            )
    if v1_request:
        if not core.get("eventTime"):
            errs.append(_required("eventTime"))
        kind = core.get("type", "")
        if kind not in ("Normal", "Warning"):
            errs.append(_invalid("type", "", f"has invalid value: {kind}"))
        for field, present in (
            ("deprecatedFirstTimestamp", core.get("firstTimestamp")),
            ("deprecatedLastTimestamp", core.get("lastTimestamp")),
            ("deprecatedCount", core.get("count")),
            ("deprecatedSource", core.get("source")),
        ):
            if present:
                errs.append(_invalid(field, "", "needs to be unset"))
    return errs


def invalid_status(name: str, errors: list[tuple[str, str, str]], *, v1_request: bool) -> JSON:
    """422 Invalid as errors.NewInvalid writes it."""
    kind = "Event.events.k8s.io" if v1_request else "Event"
    parts = [f"{field}: {message}" for field, _, message in errors]
    listed = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details: JSON = {"name": name}
    if v1_request:
        details["group"] = EVENTS_GROUP
    details["kind"] = "Event"
    details["causes"] = [
        {"reason": reason, "message": message, "field": field} for field, reason, message in errors
    ]
    return st.status(422, "Invalid", f'{kind} "{name}" is invalid: {listed}', details=details)


__all__ = [
    "EVENTS_GROUP",
    "V1_FIELD_LABELS",
    "InvalidEvent",
    "core_event",
    "core_fields_of_v1",
    "invalid_status",
    "managed_entry",
    "micro_time",
    "selectable_fields",
    "time_seconds",
    "v1_event",
    "validate",
]
