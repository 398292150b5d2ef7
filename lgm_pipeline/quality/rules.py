"""The old system's five validation rules as pandera schemas: the single definition of each rule.

A *blocking* rule failing for a row means the journey cannot be placed (no job identity, no branch,
no CRM stage): the row goes to quarantine with its reasons. A *warning* rule flags the row
(``dq_flags``) and the journey is stored. The asset checks report both, per rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd
import pandera.pandas as pa

from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.mappings import JOB_TYPE_NAMES, STATUS_MAPPING

E164_NANP = r"^\+1[2-9]\d{2}[2-9]\d{6}$"
PLAUSIBLE_EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
NOT_BLANK = r"\S"


CONTACT_COLUMNS = frozenset({"customer_name", "customer_phone", "customer_email"})
WIDE_CHECK_COLUMNS = {"estimated_cost_present_when_booked": "estimated_cost"}


class Severity(StrEnum):
    BLOCKING = "blocking"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    description: str
    schema: pa.DataFrameSchema


def rules_for(tenant: Tenant) -> list[Rule]:
    return [
        Rule(
            "customer_contact",
            Severity.WARNING,
            "Customer name, phone and email present and well-formed (phone: 10-digit NANP after "
            "normalization; email: a plausible address).",
            pa.DataFrameSchema(
                {
                    "customer_name": pa.Column(nullable=False, checks=pa.Check.str_contains(NOT_BLANK)),
                    "customer_phone": pa.Column(nullable=False, checks=pa.Check.str_matches(E164_NANP)),
                    "customer_email": pa.Column(nullable=False, checks=pa.Check.str_matches(PLAUSIBLE_EMAIL)),
                },
                name="customer_contact",
            ),
        ),
        Rule(
            "job_fields",
            Severity.BLOCKING,
            "Job number, service date and a known job type present.",
            pa.DataFrameSchema(
                {
                    "job_number": pa.Column(nullable=False, checks=pa.Check.str_contains(NOT_BLANK)),
                    "service_date": pa.Column(nullable=False),
                    "job_type": pa.Column(nullable=False, checks=pa.Check.isin(sorted(JOB_TYPE_NAMES))),
                },
                name="job_fields",
            ),
        ),
        Rule(
            "branch_mapping",
            Severity.BLOCKING,
            "The SmartMoving branch name maps to a branch configured for the tenant.",
            pa.DataFrameSchema(
                {"location_id": pa.Column(nullable=False, checks=pa.Check.isin(tenant.location_ids))},
                name="branch_mapping",
            ),
        ),
        Rule(
            "financials",
            Severity.WARNING,
            "Estimated cost present for booked work and never negative.",
            pa.DataFrameSchema(
                {"estimated_cost": pa.Column(nullable=True, checks=pa.Check.ge(0))},
                checks=[
                    pa.Check(
                        lambda df: ~df["booked"].astype(bool) | df["estimated_cost"].notna(),
                        name="estimated_cost_present_when_booked",
                    )
                ],
                name="financials",
            ),
        ),
        Rule(
            "status_mapping",
            Severity.BLOCKING,
            "The SmartMoving opportunity status maps to a CRM journey stage.",
            pa.DataFrameSchema(
                {"smartmoving_status": pa.Column(nullable=False, checks=pa.Check.isin(sorted(STATUS_MAPPING)))},
                name="status_mapping",
            ),
        ),
    ]


@dataclass
class RuleResult:
    rule: Rule
    failing_rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ValidationOutcome:
    frame: pd.DataFrame  # input rows + dq_flags (warnings) + quarantine_reasons (blocking, else None)
    results: list[RuleResult]

    @property
    def quarantined(self) -> int:
        return int(self.frame["quarantine_reasons"].notna().sum())


def _short(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _masked(column: str, value: Any) -> Any:
    """Examples go to Dagster metadata, which every UI user sees: no customer contact details there."""
    if column in CONTACT_COLUMNS and isinstance(value, str) and value:
        return f"{value[0]}*** ({len(value)} chars)"
    return value


def _failures(rule: Rule, frame: pd.DataFrame) -> dict[Any, list[dict[str, Any]]]:
    """Row index -> the reasons this rule fails it (one per column and check)."""
    try:
        rule.schema.validate(frame, lazy=True)
        return {}
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    reasons: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    seen: set[tuple[Any, str, str]] = set()
    for case in cases.dropna(subset=["index"]).itertuples(index=False):
        check = str(case.check)
        # A dataframe-wide check reports every column of a failing row; name the column it is about.
        column = WIDE_CHECK_COLUMNS.get(check, str(case.column))
        if (case.index, column, check) in seen:
            continue
        seen.add((case.index, column, check))
        reasons[case.index].append(
            {"rule": rule.name, "column": column, "check": check, "value": _short(frame.at[case.index, column])}
        )
    return reasons


def validate_journeys(frame: pd.DataFrame, tenant: Tenant) -> ValidationOutcome:
    """Apply every rule; never drops a row."""
    frame = frame.copy()
    flags: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    blocking: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    results: list[RuleResult] = []
    for rule in rules_for(tenant):
        failures = _failures(rule, frame) if len(frame) else {}
        target = blocking if rule.severity is Severity.BLOCKING else flags
        for index, reasons in failures.items():
            target[index].extend(reasons)
        examples = [
            {
                "job_number": _short(frame.at[i, "job_number"]),
                "column": r["column"],
                "check": r["check"],
                "value": _masked(r["column"], r["value"]),
            }
            for i, reasons in list(failures.items())[:5]
            for r in reasons[:1]
        ]
        results.append(RuleResult(rule, len(failures), examples))
    frame["dq_flags"] = [flags.get(i, []) for i in frame.index]
    frame["quarantine_reasons"] = [blocking.get(i) or None for i in frame.index]
    return ValidationOutcome(frame, results)
