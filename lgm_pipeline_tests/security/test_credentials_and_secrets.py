"""Issue 25, parts 2 and 5: a tenant's credentials are not run config, and its key never leaves changed.

Findings reproduced here:

- Run config (the Launchpad, or one GraphQL launch) could set
  ``resources.smartmoving.config.accounts.lgm.api_key_env/base_url_env``: tenant B's customers landed in
  ``tenant_lgm``, and any variable of the code server could be sent as ``x-api-key`` to any URL.
- Redaction matched the exact key only: an API echoing it upper-cased, reversed or cut reached the retry
  warnings, a 403 message and (from 2xx bodies) Dagster metadata.

Keys are made up per test run (never in the repository).
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import pickle
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
import yaml
from dagster._config import ConfigTypeKind
from dagster._serdes import serialize_value

from lgm_pipeline import settings
from lgm_pipeline.assets import raw
from lgm_pipeline.assets.automation import range_tags, raw_job_name
from lgm_pipeline.assets.factory import tenant_assets
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.naming import SMARTMOVING_RESOURCE_KEY
from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, start_simulator
from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import SmartMovingError
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.tenants import Tenant, load_tenants
from lgm_pipeline.tenants import config as tenants_config
from lgm_pipeline_tests.conftest import migrate_database

ACME_KEY_ENV, ACME_URL_ENV = "ACME_SM_KEY", "ACME_SM_URL"
PIECE = 8  # the shortest piece of a key that must never show


def _key() -> str:
    # URL-safe text with letters of both cases, so an upper-cased echo differs from the key.
    return f"sec-{secrets.token_urlsafe(24)}"


def _pieces(key: str) -> set[str]:
    return {v[i : i + PIECE].lower() for v in (key, key[::-1]) for i in range(len(v) - PIECE + 1)}


def _leaks(texts: list[str], key: str) -> list[str]:
    """The texts holding the key or any piece of it of 8 characters, in any case, forwards or reversed."""
    pieces = _pieces(key)
    return [t[:300] for t in texts if any(p in t.lower() for p in pieces)]


def _echoes(key: str) -> list[str]:
    """How a misbehaving API or proxy sends a key back: changed, never verbatim."""
    return [key.upper(), key[::-1], key[5:19], key[::-1][3:15].upper(), f"{key.lower()}!", key[:8].swapcase()]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    # In-memory run and event storage: the assets' data still goes to the test's PostgreSQL database.
    instance = dg.DagsterInstance.ephemeral()
    yield instance
    instance.dispose()


# ---- part 2: credentials and destination are not run config ------------------------------------------------


@pytest.fixture
def two_tenants(
    database_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[list[Tenant], RunningSimulator]]:
    """lgm and acme in one code location, each with its own key to one simulator serving two tenants; both
    schemas migrated, as `lgm`'s start-up does before any run."""
    lgm = yaml.safe_load(tenants_config.DEFAULT_TENANTS_FILE.read_text())["tenants"][0]
    acme = {
        **lgm,
        "key": "acme",
        "client_id": "clm_acme",
        "name": "Acme Movers",
        "smartmoving": {**lgm["smartmoving"], "api_key_env": ACME_KEY_ENV, "base_url_env": ACME_URL_ENV},
        "branches": [{"location_id": "loc_acme_1", "name": "One", "smartmoving_branch_name": "ONE"}],
    }
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [lgm, acme]}))
    monkeypatch.setenv(settings.TENANTS_FILE_ENV, str(path))
    tenants = load_tenants()
    migrate_database(tenants)
    config = SimulatorConfig(api_key=_key(), rate_limit_per_minute=None, churn=0.0, customers_per_day=20, tenants=2)
    with start_simulator(config) as sim:
        for tenant, key in zip(tenants, sim.api_keys, strict=True):
            monkeypatch.setenv(tenant.smartmoving.base_url_env, sim.base_url)
            monkeypatch.setenv(tenant.smartmoving.api_key_env, key)
        monkeypatch.setenv("LGM_SMARTMOVING_RATE_LIMIT", "off")
        # A transient failure retries the step in 50 ms, not after the production delay of 30 s and more.
        monkeypatch.setattr(raw, "API_RETRY_POLICY", dg.RetryPolicy(max_retries=2, delay=0.05))
        yield tenants, sim


def _served_customers(sim: RunningSimulator, key: str, day: dt.date) -> set[str]:
    with SmartMovingClient(sim.base_url, key, rate_limit_per_minute=None) as client:
        return {str(c["id"]) for c in client.list_customers(day, day)}


def _stored_customers(database_url: str, tenant: Tenant, day: dt.date) -> set[str]:
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("raw_customers", schema=tenant.schema):
                return set()
            rows = conn.execute(
                sa.text(f"SELECT customer_id FROM {tenant.schema}.raw_customers WHERE service_date = :d"), {"d": day}
            )
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def _accounts_config(tenant_key: str, **fields: Any) -> dict[str, Any]:
    return {"resources": {SMARTMOVING_RESOURCE_KEY: {"config": {"accounts": {tenant_key: fields}}}}}


#: What the probe sent: lgm's account pointed at acme's variables (its key and URL).
def _hostile(lgm: Tenant) -> dict[str, Any]:
    return _accounts_config(lgm.key, api_key_env=ACME_KEY_ENV, base_url_env=ACME_URL_ENV)


REFUSED = (
    r"Received unexpected config entries \"\['api_key_env', 'base_url_env'\]\" at path "
    r"root:resources:smartmoving:config:accounts:'lgm':value"
)


def test_the_definitions_job_refuses_run_config_naming_another_tenants_key(
    database_url: str, two_tenants: tuple[list[Tenant], RunningSimulator], instance: dg.DagsterInstance
) -> None:
    """The Launchpad's path: the code location's own refresh job, launched with the probe's run config."""
    (lgm, acme), sim = two_tenants
    day = lgm.today()
    ours, theirs = (_served_customers(sim, key, day) for key in sim.api_keys)
    assert ours and theirs and not ours & theirs  # two tenants, two different sets of customers
    job = build_definitions().resolve_job_def(raw_job_name(lgm))

    with pytest.raises(dg.DagsterInvalidConfigError, match=REFUSED):
        job.execute_in_process(run_config=_hostile(lgm), instance=instance, tags=range_tags([day]))
    assert not _stored_customers(database_url, lgm, day) & theirs  # nothing of acme's reached lgm's schema

    # The knobs stay run config, and a run that tunes them pulls with lgm's own key, into lgm's schema.
    tuned = _accounts_config(lgm.key, page_size=7, max_retries=2, rate_limit_per_minute=None)
    result = job.execute_in_process(run_config=tuned, instance=instance, tags=range_tags([day]), raise_on_error=False)
    assert result.success
    assert _stored_customers(database_url, lgm, day) == ours
    assert acme.key != lgm.key


def test_materialize_refuses_run_config_naming_any_variable_of_the_code_server(
    database_url: str, two_tenants: tuple[list[Tenant], RunningSimulator], instance: dg.DagsterInstance
) -> None:
    """``materialize`` with the definitions' resources: neither acme's key nor LGM_DATABASE_URL can be named."""
    (lgm, _), sim = two_tenants
    day = lgm.today()
    theirs = _served_customers(sim, sim.api_keys[1], day)
    defs = build_definitions()
    customers = lgm.names.asset_key("smartmoving_customers")
    for run_config in (
        _hostile(lgm),
        # the code server's database URL (its password) sent as x-api-key to a URL of the sender's choosing
        _accounts_config(lgm.key, api_key_env="LGM_DATABASE_URL", base_url_env=ACME_URL_ENV),
    ):
        with pytest.raises(dg.DagsterInvalidConfigError, match=REFUSED):
            dg.materialize(
                tenant_assets(lgm),
                selection=[customers],
                partition_key=day.isoformat(),
                resources=defs.resources,
                run_config=run_config,
                instance=instance,
            )
    assert not _stored_customers(database_url, lgm, day) & theirs


def _fields(config_type: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf field of a run config schema, with its path."""
    if config_type.kind in (ConfigTypeKind.STRICT_SHAPE, ConfigTypeKind.PERMISSIVE_SHAPE, ConfigTypeKind.SELECTOR):
        for name, field in config_type.fields.items():
            yield from _fields(field.config_type, (*path, name))
    elif config_type.kind in (ConfigTypeKind.ARRAY, ConfigTypeKind.NONEABLE):
        yield from _fields(config_type.inner_type, path)
    elif config_type.kind == ConfigTypeKind.MAP:
        yield from _fields(config_type.inner_type, (*path, "<key>"))
    else:
        yield path, config_type


def test_no_job_has_run_config_that_names_a_variable_or_a_credential(database_url: str) -> None:
    """Whatever the job: the SmartMoving resource's run config holds only numbers (no string a Launchpad could
    point at a variable, ``{env: NAME}`` included), and no field anywhere names a credential or a variable."""
    defs = build_definitions()
    jobs = list(defs.resolve_all_job_defs())
    assert (
        sum(
            any(p[:2] == ("resources", SMARTMOVING_RESOURCE_KEY) for p, _ in _fields(j.run_config_schema.config_type))
            for j in jobs
        )
        >= 4
    )
    for job in jobs:
        fields = list(_fields(job.run_config_schema.config_type))
        smartmoving = [(p, t) for p, t in fields if p[:2] == ("resources", SMARTMOVING_RESOURCE_KEY)]
        assert [p for p, t in smartmoving if "String" in t.key or t.key == "Any"] == [], job.name
        credentials = ("_env", "api_key", "base_url", "credentials", "password")
        assert [p for p, _ in fields if any(word in p[-1] for word in credentials)] == [], job.name


# ---- part 5: the key is redacted however it comes back --------------------------------------------------------


def _client(key: str, handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> SmartMovingClient:
    settings: dict[str, Any] = {
        "rate_limit_per_minute": None,
        "max_retries": 3,
        "sleep": lambda seconds: None,
        "transport": httpx.MockTransport(handler),
        "logger": logging.getLogger("lgm_pipeline.tests.echo"),
        **kwargs,
    }
    return SmartMovingClient("https://sm.example.test/v1", key, **settings)


def _texts_of_error(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), *(str(a) for a in error.args)]
    texts.append(str(pickle.loads(pickle.dumps(error))))  # as Dagster carries it across processes
    texts.append(pickle.dumps(error).decode("latin-1"))
    return texts


def _cycle(echo: str, statuses: list[int], *, json_body: bool = True) -> Callable[[httpx.Request], httpx.Response]:
    """Answers each request with the next status, the body echoing ``echo``; the last status repeats."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses[min(calls["n"], len(statuses) - 1)]
        calls["n"] += 1
        headers = {"retry-after": "0"} if status == 429 else {}
        if json_body:
            return httpx.Response(status, json={"message": f"bad key {echo}"}, headers=headers)
        return httpx.Response(status, text=f"<html>upstream said: key={echo}</html>", headers=headers)

    return handler


def test_an_echoing_api_gets_nothing_of_the_key_into_messages_logs_or_exceptions(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    key = _key()
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    day = dt.date(2026, 12, 4)
    for echo in _echoes(key):
        for json_body in (True, False):
            scenarios: list[tuple[list[int], Callable[[SmartMovingClient], Any]]] = [
                ([401], lambda c: c.list_customers(day, day)),
                ([403], lambda c: c.list_customers(day, day)),
                ([429, 500, 502, 503, 403], lambda c: c.list_branches()),  # retry warnings, then the 403
                ([429, 500, 502, 503, 504], lambda c: c.list_customers(day, day)),  # retries exhausted
                ([400], lambda c: c.get_opportunity("opp-1")),
                ([404], lambda c: c.get_opportunity("opp-1")),
                ([418], lambda c: c.ping()),
            ]
            for statuses, call in scenarios:
                client = _client(key, _cycle(echo, statuses, json_body=json_body), max_retries=4)
                with client, pytest.raises(SmartMovingError) as raised:
                    call(client)
                texts += _texts_of_error(raised.value)
            # A 403 on one endpoint after another answered: the endpoint's own error carries the body's message.
            answered = _client(key, _cycle(echo, [403], json_body=json_body))
            answered.note_answered(["customers"])
            with answered, pytest.raises(SmartMovingError) as raised:
                answered.list_leads(day, day)
            texts += _texts_of_error(raised.value)
            # A 429 naming the quota
            quota = _client(key, lambda r, e=echo: httpx.Response(429, json={"message": f"quota exceeded for {e}"}))
            with quota, pytest.raises(SmartMovingError) as raised:
                quota.list_customers(day, day)
            texts += _texts_of_error(raised.value)

        def refused(request: httpx.Request, e: str = echo) -> httpx.Response:
            raise httpx.ConnectError(f"connection refused by proxy for key {e}")

        with _client(key, refused, max_retries=1) as client, pytest.raises(SmartMovingError) as raised:
            client.ping()
        texts += _texts_of_error(raised.value)

    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text, *(r.getMessage() for r in caplog.records)]
    assert not _leaks(texts, key)
    # The search saw what it should: the bodies' messages, redacted, in warnings and errors.
    assert any("/api/branches (403): bad key [redacted]" in t for t in texts)
    assert any("retry 1 of 4" in t and "[redacted]" in t for t in caplog.messages)
    assert any("quota exhausted" in t for t in texts) and any("unavailable after 5 attempts" in t for t in texts)


def test_an_echo_in_a_2xx_body_is_redacted_before_ids_and_names_are_used(caplog: pytest.LogCaptureFixture) -> None:
    key = _key()
    upper, reversed_piece = key.upper(), key[::-1][2:16]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ping"):
            return httpx.Response(200, text=f"pong {reversed_piece}")
        if request.url.path.endswith("/opportunities/opp-1"):
            return httpx.Response(200, json={"id": f"opp-{upper}", "jobs": []})  # a wrong id: an error names it
        return httpx.Response(200, json=[{"id": "b1", "name": upper}, {"id": "b2", "name": f"x {reversed_piece}"}])

    texts: list[str] = []
    with _client(key, handler) as client:
        texts.append(str(client.ping()))
        texts.append(json.dumps(client.list_branches()))
        with pytest.raises(SmartMovingError) as raised:
            client.get_opportunity("opp-1")
        texts += _texts_of_error(raised.value)
    texts += [caplog.text, *caplog.messages]
    assert not _leaks(texts, key)
    assert '"name": "[redacted]"' in texts[1] and "x [redacted]" in texts[1]
    assert any("held part of the API key" in m for m in caplog.messages)


def test_the_redactor_covers_case_reversal_and_every_piece_of_eight() -> None:
    from lgm_pipeline.smartmoving.redaction import Redactor

    key = _key()
    redactor = Redactor([key])
    for echo in _echoes(key):
        assert not _leaks([redactor.redact(f"before {echo} after")], key), echo
        assert redactor.redact(f"before {echo} after").startswith("before [redacted]")
    assert redactor.redact("an ordinary message about /api/customers page 2") == (
        "an ordinary message about /api/customers page 2"
    )
    assert redactor.redact(key[2:9]) == key[2:9]  # 7 characters: too short to tell, left alone
    assert redactor.scrub({"a": [key.upper(), 3, None], key[::-1]: {"b": key[4:30]}}) == {
        "a": ["[redacted]", 3, None],
        "[redacted]": {"b": "[redacted]"},
    }
    assert key not in repr(redactor) and not _leaks([repr(redactor)], key)


# ---- part 5 through Dagster: the event log, metadata and the database -----------------------------------------


class EchoAPI:
    """A real HTTP server on loopback answering every request with ``answer(path, n)`` (n: the path's count)."""

    def __init__(self, answer: Callable[[str, int], tuple[int, Any]]) -> None:
        self.keys_seen: list[str] = []
        counts: dict[str, int] = {}
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                api.keys_seen.append(self.headers.get("x-api-key", ""))
                counts[path] = counts.get(path, 0) + 1
                status, body = answer(path, counts[path])
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("content-type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("content-length", str(len(raw)))
                if status == 429:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:  # the server's own access log is no part of the test
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> EchoAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _texts_of_runs(instance: dg.DagsterInstance) -> list[str]:
    texts = []
    for run in instance.get_runs():
        texts.append(serialize_value(run))
        for entry in instance.all_logs(run.run_id):
            texts.append(entry.message or "")
            texts.append(serialize_value(entry))  # metadata, error info with stacks and causes
    return texts


def test_nothing_of_an_echoed_key_reaches_the_event_log_metadata_or_the_database(
    migrated_database_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    key = _key()
    upper, backwards, piece, mixed = _echoes(key)[:4]
    statuses = [429, 500, 502, 503]  # retried by the client, each a warning in the event log; then a final 403

    def answer(path: str, n: int) -> tuple[int, Any]:
        if path.endswith("/branches"):  # a 2xx body: branch names reach the asset's metadata and raw_branches
            return 200, [{"id": "b1", "name": upper}, {"id": backwards, "name": f"Depot {piece}"}]
        if n <= len(statuses):
            echo = (upper, backwards, piece, mixed)[n - 1]
            return statuses[n - 1], {"message": f"rejected x-api-key {echo}"} if n % 2 else f"gateway: {echo}"
        return 403, {"message": f"key {upper} may not call this; reversed {backwards}"}

    tenant = load_tenants()[0]
    for name in ("httpx", "httpcore", "lgm_pipeline", "dagster"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    # The production client settings (5 retries, backoff from 0.5 s): a few seconds of waits, no run config.
    monkeypatch.setenv("LGM_SMARTMOVING_RATE_LIMIT", "off")
    defs = build_definitions()
    with EchoAPI(answer) as api:
        monkeypatch.setenv(tenant.smartmoving.base_url_env, api.base_url)
        monkeypatch.setenv(tenant.smartmoving.api_key_env, key)
        customers = dg.materialize(
            tenant_assets(tenant),
            selection=[tenant.names.asset_key("smartmoving_customers")],
            partition_key=tenant.today().isoformat(),
            resources=defs.resources,
            instance=instance,
            raise_on_error=False,
        )
        branches = dg.materialize(
            tenant_assets(tenant),
            selection=[tenant.names.asset_key("smartmoving_branches")],
            resources=defs.resources,
            instance=instance,
            raise_on_error=False,
        )
    assert set(api.keys_seen) == {key}  # the tenant's own key, and only it, was sent
    assert not customers.success and branches.success

    texts = _texts_of_runs(instance)
    engine = create_engine(migrated_database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        texts += [json.dumps(r[0]) for r in conn.execute(sa.text(f"SELECT payload FROM {tenant.schema}.raw_branches"))]
    engine.dispose()
    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text, *(r.getMessage() for r in caplog.records)]
    assert not _leaks(texts, key)
    # The search saw the retry warnings, the 403 and the metadata, each with the echo redacted.
    assert sum("; retry " in t and "[redacted]" in t for t in texts) >= len(statuses)
    assert any("/api/customers (403): key [redacted] may not call this; reversed [redacted]" in t for t in texts)
    [materialization] = [
        e.materialization
        for e in branches.get_asset_materialization_events()
        if e.asset_key == tenant.names.asset_key("smartmoving_branches")
    ]
    assert materialization.metadata["not_in_tenants_file"].value == ["Depot [redacted]", "[redacted]"]
