"""The OpenAPI document served at ``/openapi.json``, written out by hand.

Hand-written because the hot path bypasses the framework (nothing to
introspect) and because the document is a contract: it changes when the API
changes, in the same commit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from podindex import __version__
from podindex.api import integrations, podservice
from podindex.api.attribution import AttributeRequest, AttributeResponse
from podindex.api.broker import BrokerRow, MarkDead, PodSpecPush
from podindex.integrations import Preview, View

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_POD = {
    "type": "object",
    "properties": {
        "cluster": {"type": "string"},
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "uid": {"type": "string"},
        "state": {"type": "string", "enum": ["live", "terminated"]},
        "phase": {"type": "string"},
        "pod_ip": {"type": "string", "nullable": True},
        "pod_ips": {"type": "array", "items": {"type": "string"}},
        "node_name": {"type": "string"},
        "host_ip": {"type": "string"},
        "host_network": {"type": "boolean"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "identity": {"type": "string"},
        "identity_source": {"type": "string"},
        "workload": {
            "type": "object",
            "nullable": True,
            "properties": {"kind": {"type": "string"}, "name": {"type": "string"}},
        },
        "selector_labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "owner": {
            "type": "object",
            "nullable": True,
            "properties": {
                "kind": {"type": "string"},
                "name": {"type": "string"},
                "uid": {"type": "string"},
            },
        },
        "containers": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "image": {"type": "string"}},
            },
        },
        "creation_timestamp": {"type": "string", "nullable": True},
        "start_time": {"type": "string", "nullable": True},
        "deletion_timestamp": {"type": "string", "nullable": True},
        "released_at": {"type": "string", "nullable": True},
        "source": {"type": "string", "enum": ["watch", "push"]},
    },
}

_NODE = {
    "type": "object",
    "properties": {
        "ip": {"type": "string"},
        "state": {"type": "string", "enum": ["node"]},
        "cluster": {"type": "string"},
        "node_name": {"type": "string"},
        "host_network": {"type": "boolean"},
        "pods": {"type": "array", "items": {"type": "object"}},
    },
}


def _json_body(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _rows(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/BrokerRow"}}
            }
        },
    }


_NOT_FOUND = {
    "description": "No pod matches",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"enum": ["No data found"]}}}
        }
    },
}
_STORE_DOWN = _error("History not loaded yet, or the store did not answer in time")


def _broker_paths() -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    namespace = {
        "name": "namespace",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
    }
    at = {
        "name": "at",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "RFC 3339 or unix seconds: who held the IP at that instant",
    }
    return {
        "/pod/spec": {
            "post": {
                "summary": "An agent pushes a pod (upsert on namespace + name)",
                "requestBody": {"required": True, **_json_body("PodSpecPush", "The pod")},
                "responses": {
                    "200": {"description": "Stored (committed) or ignored, with the reason"},
                    "400": _error("Empty pod_name/pod_namespace, bad pod_ip or pod_obj"),
                    "413": _error("Body too large"),
                    "503": _STORE_DOWN,
                },
            }
        },
        "/pod/mark_dead": {
            "post": {
                "summary": "Mark pushed pods dead (by namespace + name, and pod_ip when given)",
                "requestBody": {"required": True, **_json_body("MarkDead", "Which pod")},
                "responses": {
                    "200": {"description": '{"marked": n}'},
                    "400": _error("Empty pod_name or bad pod_ip"),
                    "503": _STORE_DOWN,
                },
            }
        },
        "/pod/info": {
            "get": {
                "summary": "Every pod in history, live and dead, by (namespace, name)",
                "responses": {"200": _rows("All rows"), "503": _STORE_DOWN},
            }
        },
        "/pod/name/{name}": {
            "get": {
                "summary": "The live pod of that name, else the one that died last",
                "parameters": [name, namespace],
                "responses": {
                    "200": _json_body("BrokerRow", "The pod, with its object"),
                    "404": _NOT_FOUND,
                    "503": _STORE_DOWN,
                },
            }
        },
        "/pod/ip/{ip}": {
            "get": {
                "summary": "Who holds (or last held) an IP; with ?at=, who held it then",
                "parameters": [
                    {"name": "ip", "in": "path", "required": True, "schema": {"type": "string"}},
                    at,
                ],
                "responses": {
                    "200": _json_body("BrokerRow", "The pod, with its object"),
                    "400": _error("Bad IP or at"),
                    "404": _NOT_FOUND,
                    "503": _STORE_DOWN,
                },
            }
        },
        "/pod/list/{node}": {
            "get": {
                "summary": "Live pods on a node, by (namespace, name)",
                "parameters": [
                    {"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _rows("Live pods of the node"), "503": _STORE_DOWN},
            }
        },
        "/attribute": {
            "post": {
                "summary": "Attribute many (ip, timestamp) pairs to pods in one call",
                "requestBody": {"required": True, **_json_body("AttributeRequest", "The pairs")},
                "responses": {
                    "200": _json_body(
                        "AttributeResponse",
                        "One result per pair, in order, each naming its holder by index",
                    ),
                    "400": _error("A pair's ip or at is bad (its position is named)"),
                    "413": _error("Too many pairs or too large a body"),
                    "503": _STORE_DOWN,
                },
            }
        },
    }


# --- integrations (registered clusters) -----------------------------------------

_INTEGRATIONS = integrations.PREFIX
_VALIDATION = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["success", "error"]},
        "server_version": {"type": "string", "description": "with success"},
        "phase": {
            "type": "string",
            "enum": ["certificate", "reachability", "authentication"],
            "description": "with error: the first phase that failed",
        },
        "message": {"type": "string"},
    },
}
_VALIDATION_FAILED = {
    "description": "Validation failed in one phase; nothing was saved",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {"enum": ["validation_failed"]},
                    "phase": {"type": "string"},
                    "message": {"type": "string"},
                },
            }
        }
    },
}


def _integration_paths() -> dict[str, Any]:
    ident = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/IntegrationBody"}}
        },
    }
    view = _json_body("View", "The integration (never its token)")
    bad = _error(
        "A field is invalid (its name is in the error code: invalid_endpoint, invalid_name, "
        "invalid_namespace, invalid_label_selector, invalid_selector_requirement naming "
        "requirements[i], invalid_kubeconfig, invalid_body, invalid_json)"
    )
    return {
        _INTEGRATIONS: {
            "get": {
                "summary": "Every registered cluster with its health",
                "responses": {
                    "200": {
                        "description": "{items: [integration…]} ordered by name",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "items": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/View"},
                                        }
                                    },
                                }
                            }
                        },
                    }
                },
            },
            "post": {
                "summary": "Register a cluster: validated, token sealed, then watched",
                "description": (
                    "endpoint (https only) + ca_cert (PEM) + bearer_token, or kubeconfig (text) "
                    "and context; optional namespace and label_selector (or "
                    "selector_requirements). Validation runs certificate → reachability → "
                    "authentication first."
                ),
                "requestBody": body,
                "responses": {
                    "201": view,
                    "400": bad,
                    "409": _error(
                        "name_taken, or no_secret_key (no secret_key_file is configured)"
                    ),
                    "422": _VALIDATION_FAILED,
                    "503": _error("the store did not answer"),
                },
            },
        },
        f"{_INTEGRATIONS}/test": {
            "post": {
                "summary": "Validate endpoint, CA and token, phase by phase; saves nothing",
                "requestBody": body,
                "responses": {
                    "200": {
                        "description": "The outcome",
                        "content": {"application/json": {"schema": _VALIDATION}},
                    },
                    "400": bad,
                },
            }
        },
        f"{_INTEGRATIONS}/selector": {
            "post": {
                "summary": "Build a label selector from structured requirements",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SelectorBody"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "{selector: string}",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"selector": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "400": _error("a requirement is invalid: requirements[i] is named"),
                },
            }
        },
        _INTEGRATIONS + "/{id}": {
            "get": {
                "summary": "One integration with its health",
                "parameters": [ident],
                "responses": {"200": view, "404": _error("no such integration")},
            },
            "patch": {
                "summary": "Change fields (all optional); watchers restart only if the "
                "endpoint, CA, token, namespace or selector changed",
                "parameters": [ident],
                "requestBody": body,
                "responses": {
                    "200": view,
                    "400": bad,
                    "404": _error("no such integration"),
                    "409": _error("name_taken or no_secret_key"),
                    "422": _VALIDATION_FAILED,
                },
            },
            "put": {
                "summary": "Same as PATCH",
                "parameters": [ident],
                "requestBody": body,
                "responses": {"200": view, "404": _error("no such integration")},
            },
            "delete": {
                "summary": "Stop watching; its pods leave the index (dead in history)",
                "parameters": [ident],
                "responses": {
                    "204": {"description": "deleted"},
                    "404": _error("no such integration"),
                },
            },
        },
        _INTEGRATIONS + "/{id}/pods": {
            "get": {
                "summary": "Preview the integration's pods (with IPs) matching a selector",
                "parameters": [
                    ident,
                    {
                        "name": "selector",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "a Kubernetes label selector; empty matches all",
                    },
                ],
                "responses": {
                    "200": _json_body("Preview", "A sample (at most 100) and the total"),
                    "400": _error("invalid_selector or unknown_parameter"),
                    "404": _error("no such integration"),
                },
            }
        },
    }


def _struct_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            PodSpecPush,
            MarkDead,
            BrokerRow,
            AttributeRequest,
            AttributeResponse,
            integrations.IntegrationBody,
            integrations.SelectorBody,
            View,
            Preview,
            podservice.PodsResponseSchema,
            podservice.ExportLineSchema,
        ],
        ref_template="#/components/schemas/{name}",
    )
    return components


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": kind},
        "description": description,
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _page_of_pods(item: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    properties = {
        "items": {"type": "array", "items": item},
        "total": {"type": "integer"},
        "page": {"type": "integer"},
        "pageSize": {"type": "integer"},
        **more,
    }
    return _enveloped("a page of pods", {"type": "object", "properties": properties})


def _enveloped(description: str, data: dict[str, Any]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": data},
    }
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _dashboard_paths() -> dict[str, Any]:
    """The dashboard Pod API (seeds/dashboard-pod-api.md); its WebSockets are in the README."""
    one = [_path("cluster"), _path("namespace"), _path("name")]
    failure = _enveloped("an error, in the envelope (code = HTTP status)", {"nullable": True})
    item = {"$ref": "#/components/schemas/DashboardPod"}
    filters = [
        _query("namespace", "string", "only this namespace"),
        _query("status", "string", "kubectl's STATUS, e.g. CrashLoopBackOff"),
        _query("nodeName", "string", "only pods on this node"),
        _query("labelSelector", "string", "a Kubernetes label selector"),
        _query("search", "string", "substring of name, namespace, node or IP"),
        _query("page", "integer", "from 1 (default 1)"),
        _query("pageSize", "integer", "1-500 (default 20)"),
    ]
    return {
        "/api/pods": {
            "get": {
                "summary": "Pods of every cluster, newest first, filtered and paged from the index",
                "description": "As one cluster's list, across every watched cluster "
                "(page * pageSize at most 10000); clusters not synced yet are left out and "
                "named in unsynced.",
                "parameters": filters,
                "responses": {
                    "200": _page_of_pods(
                        item, unsynced={"type": "array", "items": {"type": "string"}}
                    ),
                    "400": failure,
                },
            }
        },
        "/api/clusters/{cluster}/pods": {
            "get": {
                "summary": "Pods of a cluster, newest first, filtered and paged from the index",
                "parameters": [
                    _path("cluster"),
                    _query("namespace", "string", "only this namespace"),
                    _query("status", "string", "kubectl's STATUS, e.g. CrashLoopBackOff"),
                    _query("nodeName", "string", "only pods on this node"),
                    _query("labelSelector", "string", "a Kubernetes label selector"),
                    _query("search", "string", "substring of name, namespace, node or IP"),
                    _query("page", "integer", "from 1 (default 1)"),
                    _query("pageSize", "integer", "1-500 (default 20)"),
                ],
                "responses": {
                    "200": _page_of_pods(item),
                    "400": failure,
                    "404": failure,
                    "503": failure,
                },
            }
        },
        "/api/clusters/{cluster}/namespaces/{namespace}/pods/{name}": {
            "get": {
                "summary": "One pod as the cluster has it now",
                "parameters": one,
                "responses": {"200": _enveloped("the pod", {"type": "object"}), "404": failure},
            },
            "delete": {
                "summary": "Delete the pod (uid precondition; audited)",
                "parameters": [
                    *one,
                    _query("force", "boolean", "grace period 0"),
                    _query("gracePeriod", "integer", "seconds"),
                ],
                "responses": {
                    "200": _enveloped("deleted", {"nullable": True}),
                    "400": failure,
                    "403": failure,
                    "404": failure,
                    "409": failure,
                },
            },
        },
        "/api/clusters/{cluster}/namespaces/{namespace}/pods/{name}/events": {
            "get": {
                "summary": "Events of this pod instance, most recently seen first",
                "parameters": one,
                "responses": {"200": _enveloped("events", {"type": "array"}), "404": failure},
            }
        },
        "/api/clusters/{cluster}/namespaces/{namespace}/pods/{name}/logs": {
            "get": {
                "summary": "A container's log, streamed (at most limitBytes)",
                "parameters": [
                    *one,
                    _query("container", "string", "required when the pod has several"),
                    _query("previous", "boolean", "the previous instance's log"),
                    _query("sinceSeconds", "integer", "only the last N seconds"),
                    _query("tailLines", "integer", "only the last N lines"),
                    _query("timestamps", "boolean", "prefix each line with its time"),
                    _query("limitBytes", "integer", "cap (default and maximum 10 MB)"),
                ],
                "responses": {
                    "200": _enveloped(
                        "the log",
                        {
                            "type": "object",
                            "properties": {
                                "logs": {"type": "string"},
                                "truncated": {"type": "boolean"},
                                "error": {"type": "string", "nullable": True},
                            },
                        },
                    ),
                    "400": failure,
                    "404": failure,
                },
            }
        },
    }


_DASHBOARD_POD = {
    "type": "object",
    "properties": {
        **{
            k: {"type": "string"}
            for k in (
                "name",
                "namespace",
                "uid",
                "cluster",
                "status",
                "phase",
                "ready",
                "nodeName",
                "podIP",
                "hostIP",
                "createdAt",
            )
        },
        "podIPs": {"type": "array", "items": {"type": "string"}},
        "identity": {"type": "string"},
        "workload": {
            "type": "object",
            "nullable": True,
            "properties": {"kind": {"type": "string"}, "name": {"type": "string"}},
        },
        "restarts": {"type": "integer"},
        "lastRestartAt": {"type": "string", "nullable": True},
        "containers": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "image": {"type": "string"},
                    "ready": {"type": "boolean"},
                    "restartCount": {"type": "integer"},
                },
            },
        },
    },
}

_DENIAL = {
    "type": "object",
    "required": ["error", "reason", "message", "caller_ip", "target_namespace"],
    "properties": {
        "error": {"type": "string", "enum": ["forbidden"]},
        "reason": {
            "type": "string",
            "enum": [
                "unknown_ip",
                "no_caller",
                "no_target",
                "conflicting_uri",
                "other_namespace",
                "deny_rule",
                "ambiguous_node",
                "ambiguous_clusters",
                "terminating",
            ],
        },
        "message": {"type": "string"},
        "caller_ip": {"type": "string", "nullable": True},
        "target_namespace": {"type": "string", "nullable": True},
        "rule": {"type": "string", "nullable": True},
    },
}


_RPC_ERROR = {
    "type": "object",
    "required": ["error", "code", "message", "details"],
    "properties": {
        "error": {"type": "string"},
        "code": {"type": "integer", "description": "the gRPC status code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}


def _rpc_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _RPC_ERROR}}}


def _podservice_paths() -> dict[str, Any]:
    query = _query(
        "query",
        "string",
        "Label:v1,v2+Label2:v3 (see README: Pod search and export); empty: every pod",
    )
    return {
        "/v1/pods": {
            "get": {
                "summary": "Search pods, live and deleted (PodService.GetPods)",
                "parameters": [
                    query,
                    _query("pagination.limit", "integer", "1 to 1000, default 100"),
                    _query("pagination.offset", "integer", "default 0"),
                    _query("pagination.sortOption.field", "string", "a search label"),
                    _query("pagination.sortOption.reversed", "boolean", "default false"),
                    _query(
                        "pagination.sortOption.aggregateBy.aggrFunc",
                        "string",
                        "not supported: anything but UNSET is a 400",
                    ),
                    _query(
                        "pagination.sortOption.aggregateBy.distinct",
                        "boolean",
                        "not supported: true is a 400",
                    ),
                ],
                "responses": {
                    "200": _json_body("PodsResponseSchema", "A page of pods"),
                    "400": _rpc_error("A bad query, limit, offset or sort field (named)"),
                    "503": _rpc_error("History not loaded yet, or the store unavailable"),
                },
            }
        },
        "/v1/export/pods": {
            "get": {
                "summary": "Every matching pod, streamed (PodService.ExportPods)",
                "description": (
                    "One ExportLine per line; a failure after the first line ends the "
                    'stream with one {"error": {...}} line.'
                ),
                "parameters": [
                    query,
                    _query("timeout", "integer", "seconds; 0 (default) for none"),
                ],
                "responses": {
                    "200": _json_body("ExportLineSchema", "Newline-delimited ExportLine objects"),
                    "400": _rpc_error("A bad query or timeout (named)"),
                    "503": _rpc_error("History not loaded yet, or the store unavailable"),
                    "504": _rpc_error("The deadline passed before the first line"),
                },
            }
        },
    }


def _ui_paths() -> dict[str, Any]:
    """What the web UI asks besides the pod APIs: who the caller is, an IP's leases."""
    lease = {"$ref": "#/components/schemas/Lease"}
    return {
        "/api/whoami": {
            "get": {
                "summary": "The caller and its grants (never the token)",
                "description": "Without a token: anonymous, role none. A front end hides "
                "what the role may not use; the API refuses it anyway.",
                "responses": {
                    "200": {
                        "description": "who calls",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "name": {"type": "string"},
                                        "via": {
                                            "type": "string",
                                            "enum": ["token", "serviceaccount", "anonymous"],
                                        },
                                        "role": {
                                            "type": "string",
                                            "enum": ["none", "reader", "admin"],
                                        },
                                        "grants": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "role": {"type": "string"},
                                                    "namespaces": {
                                                        "type": "array",
                                                        "nullable": True,
                                                        "items": {"type": "string"},
                                                    },
                                                },
                                            },
                                        },
                                        "lookups": {"type": "string", "enum": ["open", "reader"]},
                                    },
                                }
                            }
                        },
                    },
                    "401": _error("a malformed header, or a token nobody knows"),
                },
            }
        },
        "/api/ips/{ip}/leases": {
            "get": {
                "summary": "Every lease of an IP in the retention period, newest first",
                "description": "From memory (the lease book), every cluster: who held the IP "
                "from when to when (unix seconds; held_to null while held).",
                "parameters": [
                    {"name": "ip", "in": "path", "required": True, "schema": {"type": "string"}},
                    _query("cluster", "string", "only this cluster's leases"),
                    _query("limit", "integer", "1-1000 (default 100)"),
                ],
                "responses": {
                    "200": {
                        "description": "the leases",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "ip": {"type": "string"},
                                        "total": {"type": "integer"},
                                        "leases": {"type": "array", "items": lease},
                                    },
                                }
                            }
                        },
                    },
                    "400": _error("invalid_ip, invalid_parameter (limit) or unknown_parameter"),
                    "503": _STORE_DOWN,
                },
            }
        },
    }


def _authz_paths() -> dict[str, Any]:
    """``/authz`` answers every method alike (a proxy forwards the original one)."""
    header = {"schema": {"type": "string"}}
    operation = {
        "summary": "Forward-auth: may the calling pod reach the target namespace",
        "description": (
            "For Caddy forward_auth, nginx auth_request and Traefik ForwardAuth. The caller is "
            "the peer address, or from X-Forwarded-For / X-Real-IP / Forwarded when the peer is "
            "a trusted proxy; the target namespace comes from X-Forwarded-Uri / X-Original-URI, "
            "X-Forwarded-Host / Host, or a configured header. Allowed: the caller's pod is in the "
            "target namespace, or a policy rule allows it; a deny rule always wins."
        ),
        "parameters": [
            {"name": n, "in": "header", "required": False, "schema": {"type": "string"}}
            for n in (
                "X-Forwarded-For",
                "X-Real-IP",
                "Forwarded",
                "X-Forwarded-Uri",
                "X-Original-URI",
                "X-Forwarded-Host",
                "X-Forwarded-Method",
            )
        ],
        "responses": {
            "200": {
                "description": "Allowed; headers for the proxy to copy upstream (empty body)",
                "headers": {
                    n: header
                    for n in (
                        "X-Pod-Name",
                        "X-Pod-Namespace",
                        "X-Pod-Uid",
                        "X-Pod-Identity",
                        "X-Pod-Cluster",
                        "X-Pod-Workload",
                        "X-Pod-Caller",
                    )
                },
            },
            "403": {
                "description": "Denied, with the reason",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/AuthzDenial"}}
                },
            },
            "503": _error("Initial sync not finished: denied (fail closed)"),
        },
    }
    return {
        "/authz": {
            method: {**operation, "operationId": f"authz_{method}"}
            for method in ("get", "head", "post", "put", "patch", "delete", "options")
        }
    }


_ADMIN_OPERATIONS = (
    ("/pod/spec", "post"),
    ("/pod/mark_dead", "post"),
    ("/api/clusters/{cluster}/namespaces/{namespace}/pods/{name}", "delete"),
    (_INTEGRATIONS, "post"),
    (f"{_INTEGRATIONS}/test", "post"),
    (_INTEGRATIONS + "/{id}", "patch"),
    (_INTEGRATIONS + "/{id}", "put"),
    (_INTEGRATIONS + "/{id}", "delete"),
)
_READER_OPERATIONS = (
    (_INTEGRATIONS, "get"),
    (f"{_INTEGRATIONS}/selector", "post"),
    (_INTEGRATIONS + "/{id}", "get"),
    (_INTEGRATIONS + "/{id}/pods", "get"),
)
"""Integration reads need a reader whatever --lookup-access says."""
_OPEN_PATHS = ("/health", "/ready", "/openapi.json", "/authz", "/api/whoami")


def _with_security(doc: dict[str, Any]) -> dict[str, Any]:
    """Bearer tokens: admin for what changes state; lookups open or reader (configured)."""
    doc["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from the access file (--tokens-file) or a Kubernetes "
            "service-account token (TokenReview). Lookups need none unless "
            "--lookup-access reader; pushes and marks need the admin role.",
        }
    }
    doc["security"] = [{}, {"bearer": []}]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if path in _OPEN_PATHS:
                operation["security"] = [{}]
                continue
            responses = operation.setdefault("responses", {})
            # The dashboard's routes answer errors in their envelope too.
            error = (
                (lambda text: _enveloped(text, {"nullable": True}))
                if path.startswith("/api/clusters/") or path == "/api/pods"
                else _rpc_error
                if path.startswith("/v1/")
                else _error
            )
            responses.setdefault("401", error("no token, or one nobody knows"))
            if (path, method) in _READER_OPERATIONS:
                operation["security"] = [{"bearer": []}]
                responses.setdefault("403", error("the caller does not have the reader role"))
            elif (path, method) in _ADMIN_OPERATIONS:
                operation["security"] = [{"bearer": []}]
                responses.setdefault("403", error("the caller does not have the admin role"))
            else:
                responses.setdefault("403", error("the caller has no role (reader-only lookups)"))
    return doc


def document() -> dict[str, Any]:
    return _with_security(
        {
            "openapi": "3.0.3",
            "info": {"title": "podindex", "version": __version__},
            "paths": {
                "/pod": {
                    "get": {
                        "summary": "Who holds this IP now",
                        "description": (
                            "The pod holding the IP; a pod deleted within the grace period "
                            "(state=terminated); or, for a node IP used only by hostNetwork "
                            "pods, the node and those pods (state=node)."
                        ),
                        "parameters": [
                            {
                                "name": "ip",
                                "in": "query",
                                "required": True,
                                "schema": {"type": "string"},
                                "description": "IPv4 or IPv6, any spelling",
                            }
                        ],
                        "responses": {
                            "200": {
                                "description": "A pod, or a node of hostNetwork pods",
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "oneOf": [
                                                {"$ref": "#/components/schemas/Pod"},
                                                {"$ref": "#/components/schemas/NodeIP"},
                                            ]
                                        }
                                    }
                                },
                            },
                            "400": _error("Missing or malformed ip"),
                            "404": _error("No pod holds the IP"),
                            "409": {"description": "Pods in several clusters hold the IP"},
                            "503": _error("Initial sync not finished"),
                        },
                    }
                },
                "/pods": {
                    "get": {
                        "summary": "Pods, filtered",
                        "parameters": [
                            *(
                                {
                                    "name": n,
                                    "in": "query",
                                    "required": False,
                                    "schema": {"type": "string"},
                                }
                                for n in (
                                    "namespace",
                                    "node",
                                    "labelSelector",
                                    "cluster",
                                    "continue",
                                )
                            ),
                            {
                                "name": "limit",
                                "in": "query",
                                "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                            },
                        ],
                        "responses": {
                            "200": {
                                "description": "Matching pods ordered by namespace, name",
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "type": "object",
                                            "properties": {
                                                "count": {"type": "integer"},
                                                "total": {"type": "integer"},
                                                "continue": {"type": "string", "nullable": True},
                                                "items": {
                                                    "type": "array",
                                                    "items": {"$ref": "#/components/schemas/Pod"},
                                                },
                                            },
                                        }
                                    }
                                },
                            },
                            "400": _error(
                                "Unknown parameter, bad label selector, limit or continue"
                            ),
                            "503": _error("Initial sync not finished"),
                        },
                    }
                },
                "/health": {
                    "get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}
                },
                "/ready": {
                    "get": {
                        "summary": "Every cluster finished its initial sync",
                        "responses": {
                            "200": {"description": "ready"},
                            "503": {"description": "not ready"},
                        },
                    }
                },
                "/metrics": {
                    "get": {
                        "summary": "Prometheus metrics",
                        "responses": {"200": {"description": "ok"}},
                    }
                },
                **_broker_paths(),
                **_dashboard_paths(),
                **_authz_paths(),
                **_integration_paths(),
                **_podservice_paths(),
                **_ui_paths(),
            },
            "components": {
                "schemas": {
                    "Error": _ERROR,
                    "Pod": _POD,
                    "NodeIP": _NODE,
                    "DashboardPod": _DASHBOARD_POD,
                    "AuthzDenial": _DENIAL,
                    **_struct_schemas(),
                }
            },
        }
    )
