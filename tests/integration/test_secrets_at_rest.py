"""Secrets at rest: no secret, private key, API key or portal token in plain text in any
column of any table; sealed values open only where they belong; the key checks at start-up."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatcher import sealing
from dispatcher.errors import ConfigError
from dispatcher.sealing import SealError
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store import secrets as secret_store
from tests.conftest import ENCRYPTION_KEY, PLATFORM_TOKEN, make_settings
from tests.integration.conftest import Client, World

AUTH = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
GIVEN_SECRET = "whsec_" + base64.b64encode(b"scan-me-given-secret-32-bytes!!!").decode()
ROTATED_SECRET = "plain-rotated-secret-Zq8Wm3Kx7Lp2Vn5Rt9"
URL_USER = "scanuserQ7"
URL_PASSWORD = "scanPassW0rd-Kx81"


async def _json(client: Client, method: str, path: str, status: int, **kw: Any) -> Any:
    response = await client.request(method, path, **kw)
    assert response.status == status, await response.text()
    return await response.json()


async def populate(api: Client, world: World) -> list[str]:
    """Every kind of secret the product stores, created as users create them; their values."""
    tenant = await _json(
        api, "POST", "/internal/v1/tenants", 201, json={"name": "Scan"}, headers=AUTH
    )
    keys = [
        await _json(
            api,
            "POST",
            f"/internal/v1/tenants/{tenant['id']}/keys",
            201,
            json={"environment": env},
            headers=AUTH,
        )
        for env in ("sandbox", "production")
    ]
    tenant_auth = {"Authorization": f"Bearer {keys[0]['key']}"}
    url = world.receiver.url("/scan").replace("http://", f"http://{URL_USER}:{URL_PASSWORD}@")
    given = await _json(
        api,
        "POST",
        "/v1/webhooks",
        201,
        json={"url": url, "events": ["*"], "secret": GIVEN_SECRET},
        headers={**tenant_auth, "Idempotency-Key": "scan-create"},  # its stored answer too
    )
    generated = await _json(
        api,
        "POST",
        "/v1/webhooks",
        201,
        json={"url": world.receiver.url("/gen"), "events": ["*"]},
        headers=tenant_auth,
    )
    rotated = await _json(
        api,
        "POST",
        f"/v1/webhooks/{given['id']}/rotate-secret",
        200,
        json={"secret": ROTATED_SECRET},
        headers=tenant_auth,
    )
    found = [
        GIVEN_SECRET,
        ROTATED_SECRET,
        generated["secret"],
        rotated["secret"],
        URL_PASSWORD,
        URL_USER,
        *(k["key"] for k in keys),
    ]
    # an ed25519 endpoint, rotated: its private keys never leave the dispatcher (read back
    # through the store, to know what to look for)
    asymmetric = await _json(
        api,
        "POST",
        "/v1/webhooks",
        201,
        json={"url": world.receiver.url("/ed"), "events": ["*"], "signing": "ed25519"},
        headers=tenant_auth,
    )
    await _json(
        api, "POST", f"/v1/webhooks/{asymmetric['id']}/rotate-secret", 200, headers=tenant_auth
    )
    async with world.pool.acquire() as conn:
        private_keys = (
            await endpoint_store.active_secrets(conn, [asymmetric["id"]], world.clock.now())
        )[asymmetric["id"]]
    assert len(private_keys) == 2 and all(k.startswith("whsk_") for k in private_keys)
    found += private_keys
    if any(r.resource and r.resource.canonical == "/internal/v1/portal-sessions"
           for r in api.app.router.routes()):  # fmt: skip
        session = await _json(
            api,
            "POST",
            "/internal/v1/portal-sessions",
            201,
            json={"tenant_id": tenant["id"], "environment": "sandbox"},
            headers=AUTH,
        )
        token = session["url"].partition("#token=")[2]
        assert len(token) >= 20, session["url"]  # the link's token, found
        found.append(token)
    body = {"tenant_id": tenant["id"], "environment": "sandbox", "status": "created"}
    await _json(
        api, "POST", "/internal/v1/mailings/ml_scan/transitions", 202, json=body, headers=AUTH
    )
    await world.drain()
    return found


async def every_column_value(pool: asyncpg.Pool) -> list[tuple[str, bytes]]:
    """(table.column, value as bytes) for every text-like and bytea column of every table."""
    async with pool.acquire() as conn:
        columns = await conn.fetch(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = 'public'
                 AND data_type IN ('text', 'character varying', 'bytea', 'jsonb', 'json',
                                   'ARRAY', 'character')"""
        )
        found: list[tuple[str, bytes]] = []
        for c in columns:
            column = f'"{c["table_name"]}"."{c["column_name"]}"'
            cast = "" if c["data_type"] == "bytea" else "::text"
            rows = await conn.fetch(
                f'SELECT "{c["column_name"]}"{cast} AS v FROM "{c["table_name"]}"'
                f' WHERE "{c["column_name"]}" IS NOT NULL'
            )
            for r in rows:
                v = r["v"]
                found.append((column, bytes(v) if isinstance(v, bytes) else v.encode()))
    return found


def _forms(secret: str) -> list[bytes]:
    """The secret as text, and as the raw bytes it encodes (a whsec_ key's HMAC key)."""
    forms = [secret.encode()]
    for prefix in ("whsec_", "whsk_"):
        if secret.startswith(prefix):
            forms.append(base64.b64decode(secret.removeprefix(prefix)))
    return forms


@pytest.fixture
async def api(app_client: Any) -> Client:
    client: Client = await app_client(allow_private_targets=True, require_https=False)
    return client


async def test_no_secret_in_plain_text_in_any_column(
    api: Client, world: World, pool: asyncpg.Pool
) -> None:
    secrets = await populate(api, world)
    values = await every_column_value(pool)
    tables = {column.split(".")[0] for column, _ in values}
    assert {'"endpoint_secrets"', '"endpoints"', '"api_keys"', '"events"'} <= tables
    leaks = [
        f"{column} holds {secret[:12]}..."
        for secret in secrets
        for form in _forms(secret)
        for column, value in values
        if form in value
    ]
    assert not leaks, leaks
    # and the secrets still work: the delivery went out signed, with its Basic auth
    (got,) = world.receiver.at("/scan")
    user_pass = base64.b64decode(got.headers["Authorization"].removeprefix("Basic "))
    assert user_pass == f"{URL_USER}:{URL_PASSWORD}".encode()
    listed = await _json(
        api, "GET", "/v1/webhooks", 200, headers={"Authorization": f"Bearer {secrets[6]}"}
    )
    assert {e["url"].split("@")[0] for e in listed["data"] if "@" in e["url"]} == {"http://***:***"}


async def test_a_sealed_value_opens_only_where_it_belongs() -> None:
    keyring = sealing.keyring_from(ENCRYPTION_KEY)
    sealed = keyring.seal("whsec_abc", "endpoint_secret:ep_1")
    assert sealed.startswith(f"v1:{keyring.current_id}:") and "whsec_abc" not in sealed
    assert keyring.open(sealed, "endpoint_secret:ep_1") == "whsec_abc"
    assert keyring.seal("whsec_abc", "endpoint_secret:ep_1") != sealed  # a fresh nonce each time
    with pytest.raises(SealError):
        keyring.open(sealed, "endpoint_secret:ep_2")  # copied onto another endpoint's row
    with pytest.raises(SealError):
        keyring.open(sealed, "url_credentials:ep_1")  # or into another column
    at = sealed.rindex(":") + 20  # inside the ciphertext (the last characters may be padding)
    flipped = sealed[:at] + ("A" if sealed[at] != "A" else "B") + sealed[at + 1 :]
    with pytest.raises(SealError):
        keyring.open(flipped, "endpoint_secret:ep_1")
    other = sealing.keyring_from(sealing.generate_key())
    with pytest.raises(SealError, match="not configured"):
        other.open(sealed, "endpoint_secret:ep_1")
    both = sealing.keyring_from(sealing.generate_key(), [ENCRYPTION_KEY])
    assert both.open(sealed, "endpoint_secret:ep_1") == "whsec_abc"


@pytest.mark.parametrize(
    "text", ["", "short", "A" * 40, "!" * 44, base64.b64encode(b"x" * 31).decode()]
)
def test_a_malformed_key_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="DISPATCHER_ENCRYPTION_KEY"):
        sealing.parse_key(text)


async def test_start_up_key_checks(
    api: Client, world: World, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        # an empty database and no key: one is generated once, kept in DATA_DIR, mode 0600
        fresh = make_settings(data_dir=tmp_path / "a", database_url="postgresql://elsewhere")
        generated = await secret_store.load_keyring(conn, fresh)
        key_file = tmp_path / "a" / secret_store.KEY_FILE
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        again = await secret_store.load_keyring(conn, fresh)
        assert again.current_id == generated.current_id
    await populate(api, world)  # now the database holds secrets sealed under the test key
    async with pool.acquire() as conn:
        right = make_settings(encryption_key=ENCRYPTION_KEY)
        assert (await secret_store.load_keyring(conn, right)).current_id == sealing.key_id(
            sealing.parse_key(ENCRYPTION_KEY)
        )
        for wrong in (
            make_settings(encryption_key=sealing.generate_key()),  # another key
            make_settings(data_dir=tmp_path / "a"),  # the generated one, not theirs
            make_settings(data_dir=tmp_path / "empty"),  # none: never a silent new one
        ):
            with pytest.raises(ConfigError, match="DISPATCHER_ENCRYPTION_KEY"):
                await secret_store.load_keyring(conn, wrong)
        assert not (tmp_path / "empty").exists()
        rotating = make_settings(
            encryption_key=sealing.generate_key(), encryption_old_keys=ENCRYPTION_KEY
        )
        await secret_store.load_keyring(conn, rotating)


async def test_rows_written_before_encryption_are_sealed_at_start_up(
    api: Client, world: World, pool: asyncpg.Pool, make_tenant: Any
) -> None:
    """Plain secrets and URLs with credentials, as migration 005 left them, are sealed by the
    first process to start, and keep working."""
    tenant = await make_tenant()
    plain_url = world.receiver.url("/legacy").replace("http://", "http://old:pw-Legacy9@")
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO endpoints (id, tenant_id, environment, url, event_types, created_at,
                                      updated_at)
               VALUES ('ep_legacy', $1, 'sandbox', $2, ARRAY['*'], now(), now())""",
            tenant.tenant_id,
            plain_url,
        )
        await conn.execute(
            "INSERT INTO endpoint_secrets (endpoint_id, secret, created_at)"
            " VALUES ('ep_legacy', $1, now())",
            GIVEN_SECRET,
        )
        keyring = sealing.current()
        assert await secret_store.reseal_legacy(conn, keyring) == 2
        assert await secret_store.reseal_legacy(conn, keyring) == 0
        row = await conn.fetchrow("SELECT url, url_credentials FROM endpoints")
        secret = await conn.fetchval("SELECT secret FROM endpoint_secrets")
    assert row["url"] == world.receiver.url("/legacy")
    assert sealing.key_id_of(row["url_credentials"]) == keyring.current_id
    assert secret_store.open_secret("ep_legacy", secret) == GIVEN_SECRET
    await world.emit(tenant, "ml_legacy", "created")
    await world.drain()
    (got,) = world.receiver.at("/legacy")
    assert got.headers["Authorization"] == "Basic " + base64.b64encode(b"old:pw-Legacy9").decode()
