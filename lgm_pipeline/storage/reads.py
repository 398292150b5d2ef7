"""Reading partitions back as DataFrames, optionally narrowed to the rows one branch can use."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lgm_pipeline.storage.scope import PartitionScope
from lgm_pipeline.storage.tables import date_column, raw_customers, raw_jobs, raw_opportunities, tenant_options
from lgm_pipeline.tenants.config import Tenant


@dataclass(frozen=True)
class BranchRows:
    """Narrows a raw read to the rows one branch partition can use (``read_frame(branch=...)``).

    Left out: rows tied to an opportunity whose SmartMoving branch name is another configured
    branch's. Everything else stays, notably rows of unknown or missing branches, which every
    branch partition of the date quarantines. It is a superset of the branch's rows (names are
    compared after ``btrim``, which trims less than Python's ``strip``), so the consumer still
    filters after normalizing. Why: each of a date's branch partitions read and normalized the
    whole date's payloads, i.e. all of them once per branch.
    """

    other_branch_names: tuple[str, ...]


def _of_other_branch(opportunity: sa.FromClause, branch: BranchRows) -> sa.ColumnElement[bool]:
    name = sa.func.btrim(opportunity.c.payload["branch"]["name"].astext)
    # NULL (no branch, or not an object) is "not another branch's": the row stays.
    return sa.func.coalesce(name.in_(branch.other_branch_names), sa.false())


def _opportunity_kept(opportunity: sa.FromClause, branch: BranchRows) -> sa.ColumnElement[bool]:
    return sa.not_(_of_other_branch(opportunity, branch))


def _job_kept(job: sa.FromClause, branch: BranchRows) -> sa.ColumnElement[bool]:
    # A job whose opportunity is missing on that date stays: its branch is unknown.
    opportunities = raw_opportunities.alias("o")
    return ~sa.exists().where(
        opportunities.c.service_date == job.c.service_date,
        opportunities.c.opportunity_id == job.c.opportunity_id,
        _of_other_branch(opportunities, branch),
    )


def _customer_kept(customer: sa.FromClause, branch: BranchRows) -> sa.ColumnElement[bool]:
    # Customers are only looked up by the jobs' customer ids.
    jobs = raw_jobs.alias("j")
    return sa.exists().where(
        jobs.c.service_date == customer.c.service_date,
        jobs.c.customer_id == customer.c.customer_id,
        _job_kept(jobs, branch),
    )


#: The raw tables a branch partition can read narrowed (see :class:`BranchRows`), each tied to a
#: branch through its (job's) opportunity.
_BRANCH_FILTERS: Mapping[str, Callable[[sa.FromClause, BranchRows], sa.ColumnElement[bool]]] = {
    raw_opportunities.name: _opportunity_kept,
    raw_jobs.name: _job_kept,
    raw_customers.name: _customer_kept,
}


def read_frame(
    engine: Engine,
    tenant: Tenant,
    table: sa.Table,
    scopes: Sequence[PartitionScope] | None,
    branch: BranchRows | None = None,
) -> pd.DataFrame:
    """Rows of the given partitions (``None``: the whole table), ordered by primary key.

    JSONB columns come back as Python objects, dates as ``datetime.date``; no rows gives an
    empty frame with the table's columns. ``branch`` narrows a raw table to one branch's rows.
    """
    stmt = sa.select(table).order_by(*table.primary_key.columns)
    if branch is not None:
        if table.name not in _BRANCH_FILTERS:
            raise ValueError(f"branch-scoped reads are for the raw tables, not {table.name}")
        stmt = stmt.where(_BRANCH_FILTERS[table.name](table, branch))
    if scopes is not None:
        conditions = []
        for scope in scopes:
            parts = [sa.true()]
            if scope.service_date is not None:
                parts.append(table.c[date_column(table)] == scope.service_date)
            if scope.location_id is not None:
                parts.append(table.c.location_id == scope.location_id)
            conditions.append(sa.and_(*parts))
        stmt = stmt.where(sa.or_(sa.false(), *conditions))
    with engine.connect() as conn:
        result = conn.execution_options(**tenant_options(tenant)).execute(stmt)
        columns = list(result.keys())
        rows = result.all()
    return pd.DataFrame.from_records(rows, columns=columns)
