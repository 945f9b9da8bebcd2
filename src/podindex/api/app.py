"""Assembles the ASGI application: fast path, routes, JSON errors, lifespan.

The lifespan owns the service's background work (watchers, expiry) in one
task, started before the first request and cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podindex.api import (
    attribution,
    broker,
    dashboard,
    errors,
    integrations,
    ipsets,
    leases,
    openapi,
    podservice,
    podwatcher,
    sessions,
    ui,
    whoami,
)
from podindex.api.auth import AccessFile, Authenticator, guarded
from podindex.api.authz import Authz, AuthzCollector
from podindex.api.ipsets import IpSetsCollector
from podindex.api.lookup import ASGIApp, LookupFastPath
from podindex.api.metrics import CONTENT_TYPE, Metrics, TimedRoutes
from podindex.kube.errors import KubeError
from podindex.kube.tokenreview import ReviewedUser, review_token
from podindex.logs import configure_logging
from podindex.service import Service
from podindex.settings import Settings

log = logging.getLogger("podindex.api")


def create_app(service: Service, *, run_background: bool = True) -> ASGIApp:
    """The whole API for ``service``; ``run_background=False`` leaves watchers to the caller."""
    authenticator = authenticator_for(service)
    metrics = Metrics(service, authenticator.outcomes)
    authz = Authz(service)
    metrics.registry.register(AuthzCollector(authz))
    ipset_streams = ipsets.StreamStats()
    metrics.registry.register(IpSetsCollector(service, ipset_streams))
    openapi_body = msgspec.json.encode(openapi.document())

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def openapi_endpoint(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with authz.policy_file.watching(), service_lifespan(app):
            yield

    @contextlib.asynccontextmanager
    async def service_lifespan(app: Starlette) -> AsyncIterator[None]:
        if not run_background:
            yield
            return
        if not service.clusters and service.settings.watch:
            access = await service.resolve_access()
            await service.add_cluster(service.settings.cluster_id, access)
        task = asyncio.create_task(service.run(), name="podindex service")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[
            *podwatcher.routes(service),
            *broker.routes(service),
            *attribution.routes(service),
            *integrations.routes(service),
            *dashboard.routes(service),
            *sessions.routes(service),
            *ipsets.routes(service, ipset_streams),
            *podservice.routes(service),
            *leases.routes(service),
            *whoami.routes(),
            *ui.routes(),
            Route("/metrics", guarded(metrics_endpoint), methods=["GET"]),
            Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        ],
        exception_handlers={
            errors.ApiProblem: errors.problem_handler,
            HTTPException: errors.http_exception_handler,
            Exception: errors.unexpected_handler,
        },
        lifespan=lifespan,
    )
    app.state.authenticator = authenticator
    return LookupFastPath(TimedRoutes(app, metrics.latency), service, metrics, authenticator, authz)


def authenticator_for(service: Service) -> Authenticator:
    """Tokens from the access file; service-account tokens reviewed by the watched cluster."""
    settings = service.settings

    async def review(token: str) -> ReviewedUser | None:
        sync = service.clusters.get(settings.cluster_id)
        if sync is None:
            raise KubeError("no watched cluster to send TokenReviews to")
        return await review_token(sync.client, token)

    return Authenticator(
        AccessFile(settings.tokens_file),
        review,
        lookups_open=settings.lookup_access == "open",
    )


def app_from_env() -> ASGIApp:
    """Granian's factory target: settings come from ``PODINDEX_*`` variables."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(Service(settings))
