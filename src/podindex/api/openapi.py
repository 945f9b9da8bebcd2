"""The OpenAPI document served at ``/openapi.json``, written out by hand.

Hand-written because the hot path bypasses the framework (nothing to
introspect) and because the document is a contract: it changes when the API
changes, in the same commit.
"""

from __future__ import annotations

from typing import Any

from podindex import __version__

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


def document() -> dict[str, Any]:
    return {
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
                            for n in ("namespace", "node", "labelSelector", "cluster", "continue")
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
                        "400": _error("Unknown parameter, bad label selector, limit or continue"),
                        "503": _error("Initial sync not finished"),
                    },
                }
            },
            "/health": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
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
        },
        "components": {"schemas": {"Error": _ERROR, "Pod": _POD, "NodeIP": _NODE}},
    }
