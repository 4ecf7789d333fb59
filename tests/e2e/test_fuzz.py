"""Schemathesis against the served OpenAPI document: whatever a client sends, no 5xx and no off-schema answer.

The schema is loaded from the live server (so the test follows the routes as they are declared), every
operation is fuzzed with both schema-conforming (positive) and schema-violating (negative) requests as an
authenticated user, and the credential routes also get the ids of real credentials so GET, PATCH and DELETE
reach stored rows, not just 404s. Set STRONGROOM_FUZZ_CASES for a longer run.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.config import SchemathesisConfig

from tests.support import LeakGuard, Server, complete_body, create, http_client

CASES = int(os.environ.get("STRONGROOM_FUZZ_CASES", "300"))
# Cases per operation at least: every operation gets drawn often enough (in each mode) that the main answers
# are reached whatever the number of routes (at 300 cases for 60 operations, a run missed every 201 one time
# in three).
PER_OPERATION = 12
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
# The published schema is exact enough that the server must accept what it allows and reject what it forbids.
# Except PATCH acceptance: which fields a PATCH may carry depends on the stored credential's type, so the schema
# lists the union of all types' fields and a schema-valid PATCH can still (rightly) be a 422.
POSITIVE_CHECKS = [*CHECKS, checks.positive_data_acceptance]
NEGATIVE_CHECKS = [*CHECKS, checks.negative_data_rejection]
# A valid request may still meet a role or scope it lacks (403: the fuzzing user is no administrator), a missing
# id (404), a taken name (409) or a stale If-Match (412). A rejection is any client error the API documents, 412
# included (a PATCH body is checked first, but DELETE has no body).
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", 403, 404, 409, 412]},
            "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 409, 412, 422]},
        }
    }
)


def seed_credentials(server: Server, token: str) -> list[str]:
    """One stored credential of every type, so fuzzed ids include real ones."""
    from strongroom import credential_types

    with http_client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        return [create(api, complete_body(t, LeakGuard()))["credentialId"] for t in credential_types.TYPES.values()]


def _cross_field(path: str) -> bool:
    """Bodies with rules a schema cannot state (a data store's driver must match its JDBC URL's scheme, an
    association names an existing store, a new API key must expire in the future and no later than the caller's
    own, an S3 check needs an s3 credential and a reachable bucket, a batch job's adapter settings depend on their
    type and an upload needs a job waiting for one): a schema-valid body there can still (rightly) be a 4xx."""
    return (
        "/externalDataStores/" in path
        or "/associations/" in path
        or "/batchPredictions/" in path
        or path.endswith(("/account/apiKeys/", "/test/"))
    )


def case_strategy(schema: Any, token: str, kept: list[str], doomed: list[str]) -> st.SearchStrategy[Any]:
    """(case, checks) for positive and negative cases of every operation, always authenticated (else most
    cases stop at 401).

    Routes with an id also get stored ids: DELETE its own set, so GET and PATCH keep meeting live rows.
    """
    auth = {"Authorization": f"Bearer {token}"}
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            chosen = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else POSITIVE_CHECKS
            if mode is GenerationMode.POSITIVE and (
                operation.method.upper() == "PATCH" or _cross_field(operation.path)
            ):
                chosen = CHECKS
            strategies.append(operation.as_strategy(generation_mode=mode, headers=auth).map(lambda c, k=chosen: (c, k)))
            if "{credentialId}" in operation.path:
                ids = doomed if operation.method.upper() == "DELETE" else kept
                strategies.append(
                    st.sampled_from(ids)
                    .flatmap(
                        lambda cid, op=operation, m=mode: op.as_strategy(
                            generation_mode=m, headers=auth, path_parameters={"credentialId": cid}
                        )
                    )
                    .map(lambda c, k=chosen: (c, k))
                )
    return st.one_of(strategies)


def test_fuzz_every_route(server: Server, token: str) -> None:
    """Every generated request gets a documented status, the declared content type and a body matching the
    declared schema; none gets a 5xx."""
    schema = schemathesis.openapi.from_url(f"{server.api}/openapi.json", config=CONFIG)
    kept, doomed = seed_credentials(server, token), seed_credentials(server, token)
    cases = max(CASES, PER_OPERATION * sum(1 for _ in schema.get_all_operations()))
    seen: Counter[str] = Counter()
    session = requests.Session()

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=case_strategy(schema, token, kept, doomed))
    def fuzz(drawn: tuple[Any, list[Any]]) -> None:
        case, chosen = drawn
        response = case.call_and_validate(base_url=server.base, session=session, checks=chosen)
        seen[f"{case.method} {case.operation.path} {response.status_code}"] += 1

    fuzz()
    print(f"{sum(seen.values())} fuzz cases: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= cases // 2, seen
    statuses = {key.rsplit(" ", 1)[1] for key in seen}
    assert {"200", "201", "404", "422"} <= statuses, f"the fuzzer did not reach the app's main answers: {seen}"
