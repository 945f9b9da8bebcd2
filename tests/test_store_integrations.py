"""Integrations in the history store: saved, listed, replaced, deleted, on both backends."""

from __future__ import annotations

import msgspec
import pytest

from podindex.store.base import Store, StoredIntegration, StoreRejected


def integration(id_: str, name: str, **changes: object) -> StoredIntegration:
    base = StoredIntegration(
        id=id_,
        name=name,
        endpoint="https://10.0.0.1:6443",
        ca_cert="-----BEGIN CERTIFICATE-----\n...",
        token=b"gAAAA-sealed",
        namespace="team-a",
        label_selector="app=web",
        created_at=1000.5,
        updated_at=1000.5,
    )
    return msgspec.structs.replace(base, **changes)


async def test_saved_integrations_come_back_ordered_by_name(store: Store) -> None:
    assert await store.integrations() == []
    b = integration("i-2", "b-cluster")
    a = integration("i-1", "a-cluster", last_sync=1234.0, last_error="x", last_error_phase="p")
    await store.save_integration(b)
    await store.save_integration(a)
    assert [msgspec.structs.asdict(i) for i in await store.integrations()] == [
        msgspec.structs.asdict(a),
        msgspec.structs.asdict(b),
    ]


async def test_save_replaces_by_id_and_delete_removes(store: Store) -> None:
    await store.save_integration(integration("i-1", "one"))
    changed = integration("i-1", "renamed", token=b"other", namespace="", updated_at=2000.0)
    await store.save_integration(changed)
    (only,) = await store.integrations()
    assert msgspec.structs.asdict(only) == msgspec.structs.asdict(changed)
    assert await store.delete_integration("i-1") is True
    assert await store.delete_integration("i-1") is False
    assert await store.integrations() == []


async def test_a_health_save_writes_health_only_and_never_inserts(store: Store) -> None:
    """Another replica's older copy cannot undo a rename or bring back a deleted row."""
    await store.save_integration(integration("i-1", "renamed-elsewhere", updated_at=2000.0))
    assert await store.save_integration_health("i-1", "boom", "reachability", 3000.0) is True
    (only,) = await store.integrations()
    assert msgspec.structs.asdict(only) == msgspec.structs.asdict(
        integration(
            "i-1",
            "renamed-elsewhere",
            updated_at=2000.0,
            last_error="boom",
            last_error_phase="reachability",
            last_sync=3000.0,
        )
    )
    assert await store.delete_integration("i-1") is True
    assert await store.save_integration_health("i-1", "", "", 3001.0) is False
    assert await store.integrations() == []


async def test_a_second_integration_cannot_take_a_name(store: Store) -> None:
    await store.save_integration(integration("i-1", "same"))
    with pytest.raises(StoreRejected):
        await store.save_integration(integration("i-2", "same"))


def test_repr_never_shows_the_sealed_token() -> None:
    text = repr(integration("i-1", "x", token=b"SEALED-SECRET"))
    assert "SEALED" not in text and "SEALED" not in str(integration("i-1", "x"))
