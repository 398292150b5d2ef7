"""Who may read what: per-tenant group roles, grants, row-level security, reader logins.

Each tenant gets NOLOGIN group roles: ``lgm_<key>_reader`` (SELECT on its schema),
``lgm_<key>_crm_writer`` and ``lgm_<key>_writer`` (read/write on its schema), all tenant-wide, and
``lgm_<key>_branch_reader`` for logins bound to branches. People and services log in with their own
roles that are members of one of them. No group has any right on another tenant's schema: the
tenant boundary is the schema grant.

Row-level security on the branch-scoped tables narrows a session to some branches: after
``SET lgm.allowed_locations = 'loc_a,loc_b'`` only those rows are visible; unset or empty means
every branch the session may read. That setting is chosen by the session itself, so for the
tenant-wide groups it scopes a view (the CRM filtering per request), it is no barrier.

The barrier between branches is the branch group: a member reads only the rows of the branches
``branch_logins`` lists for its *session* user (a login cannot change it, ``SET ROLE`` does not
change it), through RESTRICTIVE policies that hold whatever else the login is granted. The group
is granted SELECT on an explicit list of tables (:data:`BRANCH_READABLE`), every one of them under
such a policy, and on the views, which run with the reader's rights; raw tables with other
branches' customers (``raw_jobs``, ``raw_customers``, ``raw_leads``) are not granted at all. Two
tables hold no branch's rows and are granted whole: ``company`` and ``zone_offsets`` (the clocks).

RLS is ENABLEd, not FORCEd: the table owner (the pipeline's connection) is not filtered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.storage.tables import (
    BRANCH_SCOPED_TABLES,
    branch_logins,
    company,
    journey_audit,
    journey_progress,
    journeys,
    journeys_quarantine,
    lead_audit,
    leads,
    leads_quarantine,
    locations,
    raw_branches,
    raw_job_timelines,
    raw_opportunities,
    tenant_options,
    zone_offsets,
)
from lgm_pipeline.tenants.config import Tenant

ALLOWED_LOCATIONS_SETTING = "lgm.allowed_locations"

_LOGIN_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_POLICY = "lgm_branch_scope"
_BOUND_POLICY = "lgm_branch_login_bound"
_ALL_ROWS_POLICY = "lgm_all_rows"
_OWN_BINDING_POLICY = "lgm_own_binding"

#: What a branch login may SELECT: the branch-scoped tables, their audit and progress, and what the
#: views join (the branch's own rows of each). Every one is under a RESTRICTIVE branch policy.
BRANCH_READABLE: tuple[sa.Table, ...] = (
    journeys,
    journeys_quarantine,
    journey_audit,
    journey_progress,
    leads,
    leads_quarantine,
    lead_audit,
    locations,
    raw_branches,
    raw_job_timelines,
    raw_opportunities,
)


class AccessError(ValueError):
    """A login name is invalid or names a role this module must not touch."""


def reader_role(tenant: Tenant) -> str:
    return f"lgm_{tenant.key}_reader"


def writer_role(tenant: Tenant) -> str:
    return f"lgm_{tenant.key}_writer"


def branch_reader_role(tenant: Tenant) -> str:
    """The group of logins bound to branches by ``branch_logins``; never a member of the tenant-wide groups."""
    return f"lgm_{tenant.key}_branch_reader"


def crm_writer_role(tenant: Tenant) -> str:
    """The CRM's own group role: reads the schema, records field progress; never writes synced tables."""
    return f"lgm_{tenant.key}_crm_writer"


def quote_ident(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def quote_literal(conn: Connection, value: str) -> str:
    processor = sa.String().literal_processor(conn.dialect)
    assert processor is not None  # every dialect renders string literals
    return processor(value)


def branch_predicate(conn: Connection, location: str = "location_id") -> str:
    """SQL true for rows of a branch the session allows (all branches when none is set).

    ``location``: the SQL naming the row's branch (a view over audit images has no such column).
    """
    setting = f"current_setting({quote_literal(conn, ALLOWED_LOCATIONS_SETTING)}, true)"
    # Location ids never contain spaces (tenants config), so spaces after commas are dropped.
    return f"(coalesce({setting}, '') = '' OR {location} = ANY (string_to_array(replace({setting}, ' ', ''), ',')))"


def _create_group_role(conn: Connection, role: str) -> None:
    # Roles are cluster-wide while schemas are per database: another database (or a concurrent
    # migration elsewhere) may have created it already, so existence and the creation race are
    # both tolerated.
    conn.exec_driver_sql(
        f"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(conn, role)}) THEN
                    CREATE ROLE {quote_ident(conn, role)} NOLOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END
            $$
            """
    )


def apply_access(conn: Connection, tenant: Tenant) -> None:
    """Create the tenant's group roles, grant them its schema and enable row-level security."""
    schema = quote_ident(conn, tenant.schema)
    reader = quote_ident(conn, reader_role(tenant))
    writer = quote_ident(conn, writer_role(tenant))
    crm = quote_ident(conn, crm_writer_role(tenant))
    branch = quote_ident(conn, branch_reader_role(tenant))
    for role in (reader_role(tenant), writer_role(tenant), crm_writer_role(tenant), branch_reader_role(tenant)):
        _create_group_role(conn, role)

    statements = [
        f"GRANT USAGE ON SCHEMA {schema} TO {reader}, {writer}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {writer}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {writer}",
        # Tables and views added by later migrations (run by this same role) inherit the grants.
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {reader}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {writer}",
    ]
    predicate = branch_predicate(conn)
    for table in BRANCH_SCOPED_TABLES:
        qualified = f"{schema}.{quote_ident(conn, table.name)}"
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
            continue  # created by a later migration, which applies the policy again
        statements += [
            f"ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS {_POLICY} ON {qualified}",
            # The branch group may narrow by the setting too; its bound is apply_branch_access's policy.
            f"CREATE POLICY {_POLICY} ON {qualified} TO {reader}, {writer}, {crm}, {branch} "
            f"USING {predicate} WITH CHECK {predicate}",
        ]
    for statement in statements:
        conn.exec_driver_sql(statement)


def apply_crm_access(conn: Connection, tenant: Tenant) -> None:
    """The CRM writer group: reads the schema (branch-scoped like readers), records field progress.

    INSERT on ``journey_progress`` covers every column but ``by``, whose default is the login: who
    recorded a stage is not the writer's to choose.
    """
    apply_access(conn, tenant)  # the group role and the branch policy that names it
    schema = quote_ident(conn, tenant.schema)
    crm = quote_ident(conn, crm_writer_role(tenant))
    progress = f"{schema}.{quote_ident(conn, journey_progress.name)}"
    insertable = ", ".join(quote_ident(conn, c.name) for c in journey_progress.columns if c.name not in ("by",))
    for statement in (
        f"GRANT USAGE ON SCHEMA {schema} TO {crm}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {crm}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {crm}",
        f"GRANT INSERT ({insertable}) ON {progress} TO {crm}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {crm}",
    ):
        conn.exec_driver_sql(statement)


def _branch_bounds(conn: Connection, tenant: Tenant) -> dict[str, str]:
    """Per table of :data:`BRANCH_READABLE`: SQL true for the rows of the session's bound branches."""
    schema = quote_ident(conn, tenant.schema)

    def table(t: sa.Table) -> str:
        return f"{schema}.{quote_ident(conn, t.name)}"

    # session_user, not current_user: SET ROLE changes the latter and never the former, and a
    # login cannot SET SESSION AUTHORIZATION (superusers only).
    bound = f"(SELECT b.location_id FROM {table(branch_logins)} b WHERE b.login = session_user)"
    own_journeys = f"(SELECT j.id FROM {table(journeys)} j WHERE j.location_id IN {bound})"
    own_leads = f"(SELECT l.id FROM {table(leads)} l WHERE l.location_id IN {bound})"
    own_job_ids = f"(SELECT j.smartmoving_job_id FROM {table(journeys)} j WHERE j.location_id IN {bound})"
    # The views match SmartMoving's branch names this way (btrim), so the bound agrees with them.
    own_branch_names = f"(SELECT l.smartmoving_branch_name FROM {table(locations)} l WHERE l.location_id IN {bound})"

    def audited(key: str, own: str) -> str:
        # An insert's audit row has no image and an update's only the changed columns: the row's
        # branch is the journey's (lead's) current one, or one its images name (a delete holds the
        # whole row; a move names both branches, each of which sees it).
        return f"((before ->> 'location_id') IN {bound} OR (after ->> 'location_id') IN {bound} OR {key} IN {own})"

    scoped = f"(location_id IN {bound})"
    return {
        journeys.name: scoped,
        journeys_quarantine.name: scoped,
        leads.name: scoped,
        leads_quarantine.name: scoped,
        locations.name: scoped,
        journey_audit.name: audited("journey_id", own_journeys),
        lead_audit.name: audited("lead_id", own_leads),
        journey_progress.name: f"(journey_id IN {own_journeys})",
        raw_job_timelines.name: f"(job_id IN {own_job_ids})",
        raw_branches.name: f"(btrim(name) IN {own_branch_names})",
        raw_opportunities.name: f"(btrim(payload -> 'branch' ->> 'name') IN {own_branch_names})",
    }


def apply_branch_access(conn: Connection, tenant: Tenant) -> None:
    """The branch group: SELECT on :data:`BRANCH_READABLE` and the views, bounded by ``branch_logins``.

    Each readable table gets a RESTRICTIVE policy for the group, so a member sees its branches'
    rows only, whatever other policy or grant it has. Tables that had no row-level security get a
    permissive all-rows policy for everyone else, so enabling it changes nothing for them.
    """
    apply_access(conn, tenant)  # the group role, and the branch-scoped tables' permissive policy naming it
    schema = quote_ident(conn, tenant.schema)
    branch = quote_ident(conn, branch_reader_role(tenant))
    tenant_wide = ", ".join(quote_ident(conn, r(tenant)) for r in (reader_role, writer_role, crm_writer_role))
    bindings = f"{schema}.{quote_ident(conn, branch_logins.name)}"
    scoped = {t.name for t in BRANCH_SCOPED_TABLES}
    statements = [
        f"GRANT USAGE ON SCHEMA {schema} TO {branch}",
        f"GRANT SELECT ON {schema}.{quote_ident(conn, company.name)} TO {branch}",
        # Who reads which branch is the owner's to say: the tenant-wide groups got the table by the
        # schema-wide grants; row-level security (no policy for them) would stop them anyway.
        f"REVOKE ALL ON {bindings} FROM {tenant_wide}",
        f"GRANT SELECT ON {bindings} TO {branch}",
        f"ALTER TABLE {bindings} ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {_OWN_BINDING_POLICY} ON {bindings}",
        f"CREATE POLICY {_OWN_BINDING_POLICY} ON {bindings} FOR SELECT TO {branch} USING (login = session_user)",
    ]
    bounds = _branch_bounds(conn, tenant)
    for table in BRANCH_READABLE:
        name, predicate = table.name, bounds[table.name]  # a readable table without a bound is a bug
        qualified = f"{schema}.{quote_ident(conn, name)}"
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
            continue  # created by a later migration, which applies this again
        statements += [
            f"GRANT SELECT ON {qualified} TO {branch}",
            f"ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS {_BOUND_POLICY} ON {qualified}",
            f"CREATE POLICY {_BOUND_POLICY} ON {qualified} AS RESTRICTIVE TO {branch} "
            f"USING {predicate} WITH CHECK {predicate}",
        ]
        if name not in scoped:
            statements += [
                f"DROP POLICY IF EXISTS {_ALL_ROWS_POLICY} ON {qualified}",
                f"CREATE POLICY {_ALL_ROWS_POLICY} ON {qualified} USING (true) WITH CHECK (true)",
            ]
    offsets = f"{schema}.{quote_ident(conn, zone_offsets.name)}"
    if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": offsets}).scalar() is not None:
        # The day views' clocks: every zone's offsets, no branch's rows (so no policy), like company.
        statements.append(f"GRANT SELECT ON {offsets} TO {branch}")
    for statement in statements:
        conn.exec_driver_sql(statement)
    grant_branch_views(conn, tenant)


def grant_branch_views(conn: Connection, tenant: Tenant) -> None:
    """SELECT on the schema's security-invoker views for the branch group (a replaced view loses it).

    Such a view reads with the reader's own grants and policies, so it shows a branch login its
    branches only, or fails on a table the group is not granted. A view with the owner's rights
    would show everything: it is never granted.
    """
    if conn.execute(sa.text("SELECT to_regrole(:r)"), {"r": branch_reader_role(tenant)}).scalar() is None:
        return  # before the migration that creates the group
    views = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind = 'v' AND 'security_invoker=true' = ANY (c.reloptions) "
            "ORDER BY 1"
        ),
        {"s": tenant.schema},
    ).scalars()
    schema, branch = quote_ident(conn, tenant.schema), quote_ident(conn, branch_reader_role(tenant))
    for view in list(views):
        conn.exec_driver_sql(f"GRANT SELECT ON {schema}.{quote_ident(conn, view)} TO {branch}")


def _is_member(conn: Connection, login: str, group: str, *, directly: bool = False) -> bool:
    if directly:
        sql = (
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m "
            "WHERE m.member = to_regrole(:l) AND m.roleid = to_regrole(:g))"
        )
    else:
        sql = "SELECT CASE WHEN to_regrole(:g) IS NOT NULL THEN pg_has_role(:l, :g, 'MEMBER') ELSE false END"
    return bool(conn.execute(sa.text(sql), {"l": login, "g": group}).scalar())


def _bind_to_branches(conn: Connection, tenant: Tenant, login: str, location_ids: Sequence[str]) -> None:
    """Make ``login`` a branch reader of ``location_ids`` only (an empty list: a tenant-wide reader)."""
    role = quote_ident(conn, login)
    tenant_wide = (reader_role(tenant), writer_role(tenant), crm_writer_role(tenant))
    scoped = conn.execution_options(**tenant_options(tenant))
    scoped.execute(branch_logins.delete().where(branch_logins.c.login == login))
    if not location_ids:
        if _is_member(conn, login, branch_reader_role(tenant), directly=True):
            conn.exec_driver_sql(f"REVOKE {quote_ident(conn, branch_reader_role(tenant))} FROM {role}")
        conn.exec_driver_sql(f"GRANT {quote_ident(conn, reader_role(tenant))} TO {role}")
        return
    for group in tenant_wide:
        if _is_member(conn, login, group, directly=True):
            conn.exec_driver_sql(f"REVOKE {quote_ident(conn, group)} FROM {role}")
    # A tenant-wide group reaches tables no branch policy covers (raw_jobs, raw_customers), and
    # the owner is never filtered: either would make the branch bound void.
    reaching = [g for g in tenant_wide if _is_member(conn, login, g)]
    owner = conn.execute(
        sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE n.nspname = :s AND (pg_has_role(:l, n.nspowner, 'MEMBER') "
            "OR (c.oid IS NOT NULL AND pg_has_role(:l, c.relowner, 'MEMBER'))))"
        ),
        {"s": tenant.schema, "l": login},
    ).scalar()
    if reaching or owner:
        through = ", ".join(reaching) if reaching else f"ownership in schema {tenant.schema}"
        raise AccessError(f"login {login!r} reads every branch through {through}; refusing to bind it to a branch")
    conn.exec_driver_sql(f"GRANT {quote_ident(conn, branch_reader_role(tenant))} TO {role}")
    scoped.execute(
        branch_logins.insert(), [{"login": login, "location_id": loc} for loc in dict.fromkeys(location_ids)]
    )


def check_locations(tenant: Tenant, location_ids: Sequence[str]) -> None:
    """Refuse a location id the tenants file does not configure, naming the ones it does."""
    unknown = [loc for loc in location_ids if loc not in tenant.location_ids]
    if unknown:
        raise AccessError(
            f"tenant {tenant.key} has no location {', '.join(unknown)}; configured: {', '.join(tenant.location_ids)}"
        )


def grant_reader(engine: Engine, tenant: Tenant, login: str, password: str, location_ids: Sequence[str] = ()) -> None:
    """Create (or update) LOGIN role ``login``: a tenant-wide reader, or one bound to ``location_ids``.

    Re-running sets the password and the scope again: other branches, or tenant-wide when none
    are given. Only a SCRAM verifier computed client-side (libpq's ``PQencryptPasswordConn``) is
    sent to the server, so the clear password appears in no statement, server log or error message.
    """
    if not _LOGIN_RE.match(login) or login.startswith("pg_") or login.startswith("lgm_"):
        raise AccessError(f"login {login!r} must match {_LOGIN_RE.pattern} and not start with pg_/lgm_")
    if not password:
        raise AccessError("password must not be empty")
    check_locations(tenant, location_ids)
    with engine.begin() as conn:
        existing = conn.execute(
            sa.text("SELECT rolsuper, rolcreaterole, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = :r"),
            {"r": login},
        ).one_or_none()
        if existing is not None and (
            existing.rolsuper or existing.rolcreaterole or existing.rolbypassrls or not existing.rolcanlogin
        ):
            raise AccessError(f"role {login!r} exists and is not a plain login role; refusing to alter it")
        driver = conn.connection.driver_connection
        verifier = driver.pgconn.encrypt_password(  # type: ignore[union-attr]
            password.encode(), login.encode(), b"scram-sha-256"
        ).decode()
        verb = "ALTER" if existing is not None else "CREATE"
        # Plain driver SQL: the verifier's ':' must not be read as a SQLAlchemy bind parameter.
        conn.exec_driver_sql(f"{verb} ROLE {quote_ident(conn, login)} LOGIN PASSWORD {quote_literal(conn, verifier)}")
        _bind_to_branches(conn, tenant, login, location_ids)
