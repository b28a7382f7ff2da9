"""Schemathesis against GET /openapi.json, for every documented route: no 5xx, ever, and
every answer (status, content type, headers, body) as the document says.

Generated requests carry the right credentials (a tenant's sandbox key on tenant routes,
the platform token on platform routes). Half of them use real ids and a real tenant, so
bodies reach the validators, the store and the database rather than stopping at a 404.
Both positive (schema-valid) and negative (schema-invalid) requests are generated, a
bounded number per route: `--long` multiplies it by ten.

Failures are collected rather than raised inside Hypothesis, so a broken route costs no
shrinking time; each is reported with its curl reproduction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.openapi import documented_routes
from tests.conftest import PLATFORM_TOKEN, make_settings
from tests.faults.fuzz_server import AppThread, Objects
from tests.figures import Recorder

POSITIVE, NEGATIVE = 30, 20  # examples per route and mode; x10 with --long
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _operations() -> list[tuple[str, str, str]]:
    """(method, path, security) of every documented route, read from the router itself."""
    app = create_app(make_settings(), None)  # type: ignore[arg-type] - the router only
    found = [
        (r.method, r.path, r.operation.security)
        for r in documented_routes(app)
        if r.operation is not None
    ]
    return sorted(found)


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def app_thread(database_url: str, migrated_pool: asyncpg.Pool) -> Iterator[AppThread]:
    server = AppThread(database_url, make_settings(log_format="json"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def schema(app_thread: AppThread) -> Any:
    document = requests.get(f"{app_thread.base_url}/openapi.json", timeout=10).json()
    loaded = schemathesis.openapi.from_dict(document)
    # Credentials are always sent (tests/integration/test_security_matrix.py covers their
    # absence), and unknown query parameters are ignored by design, as OpenAPI allows.
    loaded.config.generation.update(with_security_parameters=False, allow_extra_parameters=False)
    return loaded


def _auth(security: str, app_thread: AppThread) -> dict[str, str]:
    if security == "tenant":
        return {"Authorization": f"Bearer {app_thread.sandbox_key}"}
    if security == "platform":
        return {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    return {}


def _real_path_parameters(path: str, objects: Objects) -> dict[str, str]:
    known = {
        "/v1/webhooks/{id}": {"id": objects.endpoint_id},
        "/v1/deliveries/{id}": {"id": objects.delivery_id},
        "/v1/events/{event_id}": {"event_id": objects.event_id},
        "/internal/v1/mailings/{mailing_id}": {"mailing_id": objects.mailing_id},
        "/internal/v1/tenants/{id}/keys/{key_id}": {
            "id": objects.spare_tenant_id,
            "key_id": objects.spare_key_id,
        },
        "/internal/v1/tenants/{id}": {"id": objects.spare_tenant_id},
    }
    for prefix, params in known.items():
        if path.startswith(prefix):
            return params
    return {}


def _with_real_tenant(case: Any, tenant_id: str) -> None:
    """Point a generated transition (or batch) at the real tenant, so it is applied."""
    body = case.body
    items = body.get("transitions") if isinstance(body, dict) else None
    targets = items if isinstance(items, list) else [body]
    for item in targets:
        if isinstance(item, dict) and "tenant_id" in item:
            item["tenant_id"] = tenant_id


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("method", "path", "security"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_route_answers_as_documented(
    method: str,
    path: str,
    security: str,
    schema: Any,
    app_thread: AppThread,
    figures: Recorder,
    long_run: bool,
) -> None:
    operation = schema[path][method.lower()]
    objects = app_thread.objects()
    real = _real_path_parameters(path, objects)
    headers = _auth(security, app_thread)
    failures: list[str] = []
    sent = {"requests": 0, "5xx": 0}

    def run(mode: GenerationMode, examples: int, realistic: bool) -> None:
        params = {"path_parameters": real} if realistic and real else {}
        strategy = operation.as_strategy(generation_mode=mode, **params)
        checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def fuzz(case: Any) -> None:
            if realistic and security == "platform" and mode is GenerationMode.POSITIVE:
                _with_real_tenant(case, objects.tenant_id)
            response = case.call(base_url=app_thread.base_url, headers=headers, timeout=30)
            sent["requests"] += 1
            if response.status_code >= 500:
                sent["5xx"] += 1
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # reported together below
                if len(failures) < 5:
                    failures.append(f"[{mode.value}, real ids: {realistic}] {exc}")

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, "no valid request could be generated"
            # nothing in this route's request can be made invalid (no parameters, no body)

    scale = 10 if long_run else 1
    passes = (False, True) if real or security == "platform" else (False,)
    for mode, examples in (
        (GenerationMode.POSITIVE, POSITIVE),
        (GenerationMode.NEGATIVE, NEGATIVE),
    ):
        for realistic in passes:
            run(mode, examples * scale // len(passes), realistic)
    figures.add(malformed_inputs=sent["requests"], responses_5xx=sent["5xx"])
    assert sent["requests"] > 0
    assert not failures, f"{method} {path}:\n" + "\n\n".join(failures)
