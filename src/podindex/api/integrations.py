"""The integrations API: register, test, watch, change and remove clusters.

``/api/v1/integrations/kubernetes`` as the integration package documents it
(seeds/k8s-integration-package.txt). Reads need the reader role; anything
that changes something or contacts a cluster (create, update, delete, test)
needs the admin role. The bearer token is write-only: accepted in bodies,
never in an answer; request bodies are decoded into Structs whose ``repr``
hides it.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.api.auth import Role, require
from podindex.api.bodies import decode_body
from podindex.api.errors import ApiProblem
from podindex.integrations import IntegrationError, Spec, ValidationRefused
from podindex.kube.config import kubeconfig_cluster
from podindex.kube.errors import ConfigError
from podindex.kube.validation import Validation
from podindex.selectors import SelectorError, build_selector
from podindex.service import Service

PREFIX = "/api/v1/integrations/kubernetes"
MAX_BODY = 256 * 1024
_ALLOWED_PREVIEW_PARAMS = frozenset({"selector"})


class Requirement(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    operator: str
    values: list[str] = []


class IntegrationBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Create, update (every field optional) and test bodies.

    Either ``endpoint`` + ``ca_cert`` + ``bearer_token``, or ``kubeconfig``
    (its text) and an optional ``context``. The label selector comes as a
    string or as structured ``selector_requirements``.
    """

    name: str | None = None
    endpoint: str | None = None
    ca_cert: str | None = None
    bearer_token: str | None = None
    namespace: str | None = None
    label_selector: str | None = None
    selector_requirements: list[Requirement] | None = None
    kubeconfig: str | None = None
    context: str | None = None

    def __repr__(self) -> str:
        return f"IntegrationBody(name={self.name!r}, endpoint={self.endpoint!r}, token=****)"

    __str__ = __repr__


class SelectorBody(msgspec.Struct, forbid_unknown_fields=True):
    requirements: list[Requirement]


async def _require(request: Request, role: Role, service: Service) -> None:
    """``role`` everywhere: integrations are cluster-wide, so a grant limited to some
    namespaces (a reader of team-a) does not reach them."""
    principal = await require(request, role)
    if principal.namespaces is not None:
        raise ApiProblem(
            403,
            "forbidden",
            f"{principal.name} has role {principal.role.name.lower()} only in some "
            "namespaces; integrations are cluster-wide",
        )
    if not service.integrations.loaded:
        raise ApiProblem(
            503, "not_ready", "the registered clusters are not loaded yet (the store is down?)"
        )


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


def _problem(exc: IntegrationError) -> Response:
    if isinstance(exc, ValidationRefused):
        return _json(
            {
                "error": exc.code,
                "phase": exc.validation.phase,
                "message": exc.validation.message,
            },
            exc.status,
        )
    raise ApiProblem(exc.status, exc.code, exc.message)


def _selector(body: IntegrationBody) -> str | None:
    if body.selector_requirements is None:
        return body.label_selector
    if body.label_selector:
        raise ApiProblem(
            400,
            "invalid_body",
            "give label_selector or selector_requirements, not both",
        )
    try:
        return build_selector([(r.key, r.operator, r.values) for r in body.selector_requirements])
    except SelectorError as exc:
        raise ApiProblem(400, "invalid_selector_requirement", str(exc)) from None


def _spec(body: IntegrationBody, *, need_name: bool) -> Spec:
    """A full spec from a create or test body (a kubeconfig context, or the three fields)."""
    if need_name and not body.name:
        raise ApiProblem(400, "invalid_name", "name is required")
    endpoint, ca_cert, token, context = body.endpoint, body.ca_cert, body.bearer_token, ""
    if body.kubeconfig is not None:
        if endpoint or ca_cert or token:
            raise ApiProblem(
                400,
                "invalid_body",
                "give kubeconfig (and context) or endpoint, ca_cert and bearer_token, not both",
            )
        try:
            found = kubeconfig_cluster(body.kubeconfig, body.context)
        except ConfigError as exc:
            raise ApiProblem(400, "invalid_kubeconfig", str(exc)) from None
        endpoint, ca_cert, token, context = found.endpoint, found.ca_pem, found.token, found.context
    for field, value in (("endpoint", endpoint), ("ca_cert", ca_cert), ("bearer_token", token)):
        if not value:
            raise ApiProblem(400, f"invalid_{field}", f"{field} is required")
    assert endpoint is not None and ca_cert is not None and token is not None
    return Spec(
        name=body.name or "",
        endpoint=endpoint,
        ca_cert=ca_cert,
        token=token,
        namespace=body.namespace or "",
        label_selector=_selector(body) or "",
        context=context,
    )


def _validation(result: Validation) -> dict[str, str | None]:
    if result.ok:
        return {"status": "success", "server_version": result.server_version}
    return {"status": "error", "phase": result.phase, "message": result.message}


def routes(service: Service) -> list[Route]:
    integrations = service.integrations

    async def list_(request: Request) -> Response:
        await _require(request, Role.READER, service)
        return _json({"items": integrations.views()})

    async def create(request: Request) -> Response:
        await _require(request, Role.ADMIN, service)
        body = await decode_body(request, IntegrationBody, MAX_BODY)
        try:
            view = await integrations.create(_spec(body, need_name=True))
        except IntegrationError as exc:
            return _problem(exc)
        return _json(view, 201)

    async def test(request: Request) -> Response:
        await _require(request, Role.ADMIN, service)
        body = await decode_body(request, IntegrationBody, MAX_BODY)
        try:
            result = await integrations.test(_spec(body, need_name=False))
        except ValidationRefused as exc:
            result = exc.validation
        except IntegrationError as exc:
            return _problem(exc)
        return _json(_validation(result))

    async def selector(request: Request) -> Response:
        await _require(request, Role.READER, service)
        body = await decode_body(request, SelectorBody, MAX_BODY)
        try:
            built = build_selector([(r.key, r.operator, r.values) for r in body.requirements])
        except SelectorError as exc:
            raise ApiProblem(400, "invalid_selector_requirement", str(exc)) from None
        return _json({"selector": built})

    async def get(request: Request) -> Response:
        await _require(request, Role.READER, service)
        try:
            return _json(integrations.view(request.path_params["id"]))
        except IntegrationError as exc:
            return _problem(exc)

    async def update(request: Request) -> Response:
        await _require(request, Role.ADMIN, service)
        body = await decode_body(request, IntegrationBody, MAX_BODY)
        if body.kubeconfig is not None or body.context is not None:
            raise ApiProblem(
                400, "invalid_body", "kubeconfig can only register; update the fields instead"
            )
        try:
            view = await integrations.update(
                request.path_params["id"],
                name=body.name,
                endpoint=body.endpoint,
                ca_cert=body.ca_cert,
                token=body.bearer_token,
                namespace=body.namespace,
                label_selector=_selector(body),
            )
        except IntegrationError as exc:
            return _problem(exc)
        return _json(view)

    async def delete(request: Request) -> Response:
        await _require(request, Role.ADMIN, service)
        try:
            await integrations.delete(request.path_params["id"])
        except IntegrationError as exc:
            return _problem(exc)
        return Response(status_code=204)

    async def pods(request: Request) -> Response:
        await _require(request, Role.READER, service)
        unknown = sorted(set(request.query_params) - _ALLOWED_PREVIEW_PARAMS)
        if unknown:
            raise ApiProblem(
                400, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}"
            )
        try:
            preview = integrations.preview(
                request.path_params["id"], request.query_params.get("selector")
            )
        except IntegrationError as exc:
            return _problem(exc)
        return _json(preview)

    return [
        Route(PREFIX, list_, methods=["GET"]),
        Route(PREFIX, create, methods=["POST"]),
        Route(f"{PREFIX}/test", test, methods=["POST"]),
        Route(f"{PREFIX}/selector", selector, methods=["POST"]),
        Route(PREFIX + "/{id}", get, methods=["GET"]),
        Route(PREFIX + "/{id}", update, methods=["PATCH", "PUT"]),
        Route(PREFIX + "/{id}", delete, methods=["DELETE"]),
        Route(PREFIX + "/{id}/pods", pods, methods=["GET"]),
    ]
