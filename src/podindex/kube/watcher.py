"""List-then-watch of one collection, kept correct through disconnects and 410s.

Modelled on kopf's ``watching.py`` and client-go's reflector:

* LIST in chunks (``limit``/``continue``); the complete list replaces the
  sink's state for this scope, so objects that vanished are deleted.
* WATCH from the list's resourceVersion with ``allowWatchBookmarks``; every
  object and bookmark advances the resourceVersion; when the server ends the
  stream (its ``timeoutSeconds``) or the connection drops, watch again from
  the last one.
* ``410 Gone`` (as an HTTP status, or as an ERROR event in a 200 stream — both
  forms are in the recordings) means the version was compacted: relist and
  reconcile. Never re-watch with an empty resourceVersion, which would skip
  every change made in between.
* Other failures back off by a policy function ``(error, attempt) -> seconds``
  (capped exponential with jitter by default), are logged and counted.
* A stream that sends no byte, not even a bookmark, for ``stall_timeout`` is
  abandoned and reopened from the last resourceVersion.

:class:`WatchDriver` is the pure part (parse a line, track the version);
:class:`Watcher` only does I/O and retries, one pass at a time, so tests can
drive single passes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

import msgspec

from podindex.kube.client import KubeClient, Resource
from podindex.kube.errors import ApiError, Gone, KubeError, StreamStalled, TransportError, api_error
from podindex.model import ListMeta, ObjectMeta, RawWatchEvent, Status, WatchEventType

log = logging.getLogger("podindex.watch")

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class HasMetadata(Protocol):
    @property
    def metadata(self) -> ObjectMeta: ...


T = TypeVar("T", bound=HasMetadata)


class Page(Protocol[T]):
    """One LIST response: PodList or PartialObjectMetadataList."""

    @property
    def metadata(self) -> ListMeta: ...

    @property
    def items(self) -> list[T] | None: ...


class Sink(Protocol[T]):
    """Where a watcher delivers what it learns. Called on the event loop, never concurrently."""

    def replace(self, items: list[T], resource_version: str) -> None:
        """The complete current state of the watched scope, as of a LIST at that version."""

    def apply(self, event_type: EventType, item: T) -> None:
        """One change from the watch stream."""


BackoffPolicy = Callable[[Exception, int], float]


def capped_backoff(
    base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> BackoffPolicy:
    """Exponential backoff, capped, with jitter in [50 %, 100 %] of the step."""
    chooser = rng or random.Random()

    def policy(error: Exception, attempt: int) -> float:
        if isinstance(error, ApiError) and error.status.details is not None:
            retry_after = error.status.details.retryAfterSeconds
            if retry_after:
                return float(min(retry_after, cap))
        step: float = min(cap, base * 2.0 ** max(0, attempt - 1))
        return step * chooser.uniform(0.5, 1.0)

    return policy


_status_decoder = msgspec.json.Decoder(Status)
_event_decoder = msgspec.json.Decoder(RawWatchEvent)


class _TypedEvent(msgspec.Struct, Generic[T], gc=False):
    type: WatchEventType
    object: T


class WatchDriver(Generic[T]):
    """Parses watch-event lines and tracks the last resourceVersion. No I/O.

    A line is decoded once, straight into the typed event; only a line that
    does not fit (an ERROR event carries a Status, not the object) is decoded
    a second time, generically.
    """

    def __init__(self, item_type: type[T], resource_version: str) -> None:
        self._typed_decoder: msgspec.json.Decoder[_TypedEvent[T]] = msgspec.json.Decoder(
            _TypedEvent[item_type]  # type: ignore[valid-type]
        )
        self.resource_version = resource_version
        self.bookmarks = 0

    def feed(self, line: bytes) -> tuple[EventType, T] | None:
        """Decode one line: an event to apply, or None for a bookmark.

        Raises :class:`Gone` (or another ApiError) for an ERROR event and
        ``msgspec.DecodeError`` for a line that is not a watch event.
        """
        try:
            event = self._typed_decoder.decode(line)
        except msgspec.ValidationError:
            raw = _event_decoder.decode(line)
            if raw.type == "ERROR":
                raise api_error(_status_decoder.decode(raw.object)) from None
            raise
        if event.type == "ERROR":  # a Status that happened to fit the object's shape
            raise api_error(_status_decoder.decode(_event_decoder.decode(line).object))
        item = event.object
        version = item.metadata.resourceVersion
        if version:
            self.resource_version = version
        if event.type == "BOOKMARK":
            self.bookmarks += 1
            return None
        return event.type, item


@dataclass
class WatchStats:
    """Counters for logs, health and metrics; read by other layers, written only here."""

    lists: int = 0
    relists_410: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    errors: int = 0
    stalls: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_sync: float | None = None
    resource_version: str = ""


class Watcher(Generic[T]):
    """Keeps a :class:`Sink` equal to one collection of one API server."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        item_type: type[T],
        list_type: type[Page[T]],
        sink: Sink[T],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        page_size: int = 500,
        stall_timeout: float = 90.0,
        watch_timeout: tuple[int, int] = (300, 600),
        backoff: BackoffPolicy | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        trim: Callable[[T], T] | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.item_type = item_type
        self.list_decoder: msgspec.json.Decoder[Page[T]] = msgspec.json.Decoder(list_type)
        self.sink = sink
        self.namespace = namespace
        self.label_selector = label_selector
        self.page_size = page_size
        self.stall_timeout = stall_timeout
        self.watch_timeout = watch_timeout
        self.backoff = backoff or capped_backoff(rng=rng)
        self.rng = rng or random.Random()
        self.wall_clock = wall_clock
        self.trim = trim
        """Applied to each listed object as its page is decoded, to drop what the sink won't keep."""
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.stats = WatchStats()
        self.name = f"{resource.plural}" + (f"/{namespace}" if namespace else "")
        self.on_sync: Callable[[], None] | None = None
        """Called after every successful LIST and every WATCH the server accepted."""
        self.on_error: Callable[[Exception], None] | None = None
        """Called with every failure the watcher backs off from (a health monitor listens)."""

    def _scope_params(self) -> dict[str, str]:
        return {"labelSelector": self.label_selector} if self.label_selector else {}

    async def list_once(self) -> str:
        """LIST the collection in chunks and replace the sink's state; returns the list's rv.

        A continue token that expires mid-list (410) restarts the list from
        the beginning once: a consistent snapshot is worth a second pass. A
        second expiry raises :class:`Gone` so the caller backs off.
        """
        restarted = False
        while True:
            items: list[T] = []
            pages = 0
            params = self._scope_params()
            params["limit"] = str(self.page_size)
            try:
                while True:
                    body = await self.client.list_page(self.resource, self.namespace, params)
                    page = self.list_decoder.decode(body)
                    page_items = page.items or ()
                    items.extend(map(self.trim, page_items) if self.trim else page_items)
                    meta = page.metadata
                    if not meta.continue_:
                        break
                    pages += 1
                    if pages % 20 == 0:  # initial-sync progress for an operator watching the log
                        log.info(
                            "%s: listed %d so far, about %s to go",
                            self.name,
                            len(items),
                            meta.remainingItemCount if meta.remainingItemCount is not None else "?",
                        )
                    params["continue"] = meta.continue_
            except Gone:
                if restarted:
                    raise
                restarted = True
                self.stats.relists_410 += 1
                log.warning(
                    "%s: list continue token expired; listing again from the start", self.name
                )
                continue
            self.stats.lists += 1
            self.sink.replace(items, meta.resourceVersion)
            version: str = meta.resourceVersion
            self.resource_version = version
            self.stats.resource_version = version
            self.stats.last_sync = self.wall_clock()
            self.synced.set()
            log.info("%s: listed %d objects at resourceVersion %s", self.name, len(items), version)
            return version

    async def watch_once(self) -> int:
        """One WATCH pass from the current resourceVersion; returns events applied.

        Returns normally when the server ends the stream; raises on errors.
        """
        if self.resource_version is None:
            raise RuntimeError("watch_once needs a resourceVersion: list first")
        driver = WatchDriver(self.item_type, self.resource_version)
        params = self._scope_params()
        params.update(
            watch="1",
            resourceVersion=self.resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self.rng.randint(*self.watch_timeout)),
        )
        self.stats.watches += 1
        applied = 0
        sink = self.sink
        stats = self.stats
        try:
            async with self.client.watch_lines(
                self.resource, self.namespace, params, self.stall_timeout
            ) as lines:
                # Connected again once the stream carries something (an event or a
                # bookmark), not when it opens: a server that accepts each watch and
                # cuts it at once must not look healthy between the cuts.
                reported = False
                async for line in lines:
                    if not reported:
                        reported = True
                        self._succeeded()
                    # An undecodable line propagates: run() relists rather than resume
                    # from a version whose next event we can never read.
                    event = driver.feed(line)
                    if event is None:
                        stats.bookmarks += 1
                    else:
                        sink.apply(event[0], event[1])
                        applied += 1
                        stats.events += 1
                    self.resource_version = driver.resource_version
        finally:
            self.resource_version = driver.resource_version
            stats.resource_version = driver.resource_version
        return applied

    async def run(self) -> None:
        """List, then watch forever; relist on 410; back off on failures.

        ``attempt`` counts failures since the last watch that ended normally;
        a first 410 relists at once, repeated ones (a server compacting
        faster than we can list) back off like any other failure.
        """
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                if self.resource_version is None:
                    await self.list_once()
                    self._succeeded()
                applied = await self.watch_once()
                if applied == 0 and time.monotonic() - started < 1.0:
                    # A server that ends every watch at once would make us spin.
                    raise TransportError(f"{self.name}: watch ended immediately without events")
                self._succeeded()
                attempt = 0
            except Gone as exc:
                self.stats.relists_410 += 1
                log.warning(
                    "%s: resourceVersion %s expired (%s); relisting",
                    self.name,
                    self.resource_version,
                    exc.status.message,
                )
                self.resource_version = None
                attempt += 1
                if attempt > 1:
                    await asyncio.sleep(self.backoff(exc, attempt - 1))
            except KubeError as exc:
                attempt += 1
                self._failed(exc)
                delay = self.backoff(exc, attempt)
                log.warning(
                    "%s: %s (attempt %d); retrying in %.2fs", self.name, exc, attempt, delay
                )
                await asyncio.sleep(delay)
            except Exception as exc:  # an undecodable body or event, a bug in a sink
                attempt += 1
                self._failed(exc)
                delay = self.backoff(exc, attempt)
                log.exception("%s: unexpected %r; relisting in %.2fs", self.name, exc, delay)
                self.resource_version = None  # the sink may have missed an event: start clean
                await asyncio.sleep(delay)

    def _succeeded(self) -> None:
        self.stats.consecutive_failures = 0
        self.stats.last_sync = self.wall_clock()
        if self.on_sync is not None:
            self.on_sync()

    def _failed(self, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.consecutive_failures += 1
        self.stats.last_error = str(exc)
        if isinstance(exc, StreamStalled):
            self.stats.stalls += 1
        if self.on_error is not None:
            self.on_error(exc)
