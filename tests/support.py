"""Helpers shared by the tests that use the services directly (no server process)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from strongroom.bootstrap import Services
from strongroom.crypto.barrier import Binding
from strongroom.crypto.envelope import Sealed
from strongroom.services.accounts import Principal


def make_credential(services: Services, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create a credential through the service; its API JSON as a dict."""
    return orjson.loads(services.credentials.create(who, body))  # type: ignore[no-any-return]


def fetch_credential(services: Services, who: Principal, credential_id: str) -> dict[str, Any]:
    """Get a credential through the service; its API JSON as a dict."""
    return orjson.loads(services.credentials.get(who, credential_id)[0])  # type: ignore[no-any-return]


def secrets_of(services: Services, row: Any) -> dict[str, Any]:
    """The secret fields of a stored credential row (an ORM `Credential`), through the barrier."""
    sealed = Sealed(row.key_version, bytes(row.wrapped_key), bytes(row.ciphertext))
    return services.barrier.open(binding_of(row), sealed)


def binding_of(row: Any) -> Binding:
    """What a stored credential row (an ORM `Credential`) is sealed to."""
    return Binding(row.id, row.owner_id, row.credential_type, row.seal_generation, row.public_data)
