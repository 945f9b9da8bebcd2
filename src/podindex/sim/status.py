"""metav1.Status bodies exactly as kube-apiserver writes them for errors.

Clients branch on these (reason, code, the continue token inside a 410), so the
emulator reproduces the real field order and messages from the recordings.
"""

from __future__ import annotations

from typing import Any

import msgspec

from podindex.sim.store import Resource

_encode = msgspec.json.encode

LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the provided "
    "token results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list."
)


def status(
    code: int,
    reason: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
    }
    if message:
        body["message"] = message
    body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def encode_status(body: dict[str, Any]) -> bytes:
    return _encode(body) + b"\n"


def resource_details(
    resource: Resource, name: str | None, *, kind: str | None = None
) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name is not None:
        details["name"] = name
    if resource.group:
        details["group"] = resource.group
    details["kind"] = kind or resource.plural
    return details


def qualified(resource: Resource) -> str:
    """GroupResource.String(): ``pods``, ``replicasets.apps``, ``events.events.k8s.io``."""
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def not_found(resource: Resource, name: str) -> dict[str, Any]:
    return status(
        404,
        "NotFound",
        f'{qualified(resource)} "{name}" not found',
        details=resource_details(resource, name),
    )


def already_exists(resource: Resource, name: str) -> dict[str, Any]:
    return status(
        409,
        "AlreadyExists",
        f'{qualified(resource)} "{name}" already exists',
        details=resource_details(resource, name),
    )


def unauthorized() -> dict[str, Any]:
    return status(401, "Unauthorized", "Unauthorized")


def conflict(resource: Resource, name: str, message: str) -> dict[str, Any]:
    return status(
        409, "Conflict", message, details=resource_details(resource, name, kind=resource.kind)
    )


def bad_request(message: str) -> dict[str, Any]:
    return status(400, "BadRequest", message)


def expired(message: str, *, continue_token: str | None = None) -> dict[str, Any]:
    metadata = {"continue": continue_token} if continue_token else None
    return status(410, "Expired", message, metadata=metadata)


def too_large(requested: int, current: int) -> dict[str, Any]:
    return status(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        details={
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
    )


def no_such_resource() -> dict[str, Any]:
    return status(404, "NotFound", "the server could not find the requested resource", details={})


def method_not_allowed() -> dict[str, Any]:
    return status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        details={},
    )


def not_acceptable(message: str) -> dict[str, Any]:
    return status(406, "NotAcceptable", message)


def success(resource: Resource, name: str, uid: str) -> dict[str, Any]:
    details = resource_details(resource, name)
    details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }
