"""The four deploy files parse, agree with each other and with the package, and hold no secret.

What no container runtime here can check (docs/deploy.md says what was exercised): the compose file's
shape and start order, the Helm values mirroring the production instance, the image's pinned base,
non-root user and health check. The production instance itself is loaded by Dagster here and run for
real by the topology test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from lgm_pipeline.cli.runtime import code_location, packaged_text
from lgm_pipeline.tenants import load_tenants

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
LGM_SERVICES = ("migrate", "code", "webserver", "daemon", "webhooks")


def _yaml(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _dockerfile_cmd() -> list[str]:
    [line] = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return yaml.safe_load(line.removeprefix("CMD "))  # the JSON (exec) form


def test_the_production_instance_is_valid_dagster_config() -> None:
    config, _ = dagster_instance_config(str(DEPLOY), "dagster.yaml")
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    assert set(config["retention"]) == {"schedule", "sensor", "auto_materialize"}


def test_instance_settings_agree_across_dagster_yaml_helm_and_the_package() -> None:
    production, helm = _yaml("dagster.yaml"), _yaml("helm/values.yaml")
    laptop = yaml.safe_load(packaged_text("dagster.yaml"))
    pools = production["concurrency"]["pools"]
    assert pools == laptop["concurrency"]["pools"] == helm["additionalInstanceConfig"]["concurrency"]["pools"]

    queue = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    runs = production["concurrency"]["runs"]
    assert queue["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert [limit["key"] for limit in runs["tag_concurrency_limits"]] == ["tenant"]
    assert all(t.names.tags == {"tenant": t.key} for t in load_tenants())  # the tag the limits count

    retries, monitoring = helm["dagsterDaemon"]["runRetries"], helm["dagsterDaemon"]["runMonitoring"]
    assert retries["maxRetries"] == production["run_retries"]["max_retries"]
    assert retries["retryOnAssetOrOpFailure"] == production["run_retries"]["retry_on_asset_or_op_failure"]
    assert monitoring["startTimeoutSeconds"] == production["run_monitoring"]["start_timeout_seconds"]
    for helm_key, key in (("schedule", "schedule"), ("sensor", "sensor"), ("autoMaterialize", "auto_materialize")):
        assert helm["retention"][helm_key]["purgeAfterDays"] == production["retention"][key]["purge_after_days"]


def test_every_code_server_command_serves_the_packaged_code_location() -> None:
    location = code_location()
    expected = ["-m", location.module_name, "--location-name", location.location_name]
    compose = _yaml("docker-compose.yaml")["services"]
    helm = _yaml("helm/values.yaml")["dagster-user-deployments"]["deployments"]
    for command in (_dockerfile_cmd(), compose["code"]["command"]):
        assert command[:3] == ["dagster", "api", "grpc"] and command[-4:] == expected
    assert [d["dagsterApiGrpcArgs"] for d in helm] == [expected]
    # migrations run once before each code server starts, from the same image: run pods only check the version
    for deployment in helm:
        [migrate] = deployment["initContainers"]
        assert migrate["command"] == ["lgm", "db", "migrate"]
        assert migrate["image"].split(":")[0] == deployment["image"]["repository"]


def test_compose_starts_in_order_with_health_checks_and_keeps_keys_in_the_code_server() -> None:
    compose = _yaml("docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", *LGM_SERVICES}
    needs = {name: service.get("depends_on", {}) for name, service in services.items()}
    assert needs["migrate"] == {"postgres": {"condition": "service_healthy"}}
    assert needs["code"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert needs["webserver"] == needs["daemon"] == {"code": {"condition": "service_healthy"}}
    # the webhook receiver needs the tenant schemas, not the code server
    assert needs["webhooks"] == {"migrate": {"condition": "service_completed_successfully"}}
    for name in ("postgres", "code", "webserver", "daemon", "webhooks"):
        assert services[name]["healthcheck"]["test"], name
    # the SmartMoving keys (the env file) reach the code server, which launches the runs, and nothing else
    assert [name for name, service in services.items() if "env_file" in service] == ["code"]
    assert services["code"]["env_file"] == [{"path": ".env", "required": True}]
    for name in ("webserver", "daemon"):
        assert services[name]["command"][-2:] == ["-w", "/opt/dagster/workspace.yaml"]
    # no literal password: every credential is interpolated from the env file
    text = (DEPLOY / "docker-compose.yaml").read_text()
    assert not re.search(r"://\w+:(?!\$\{)[^@\s]+@", text)


def test_env_example_names_every_tenant_variable_and_holds_no_secret() -> None:
    entries = dict(
        line.split("=", 1)
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for tenant in load_tenants():
        assert {tenant.smartmoving.base_url_env, tenant.smartmoving.api_key_env} <= set(entries)
        assert entries[tenant.smartmoving.api_key_env] == ""
        if tenant.smartmoving.webhook_token_env:
            assert entries[tenant.smartmoving.webhook_token_env] == ""
    assert entries["POSTGRES_PASSWORD"] == ""


def test_the_real_env_file_stays_out_of_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/.env"], cwd=REPO, check=False, capture_output=True
    ).returncode
    assert ignored == 0


def test_the_image_is_pinned_non_root_and_checked() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    [check] = re.findall(r"^\s+CMD (\[.*\])$", text[text.index("HEALTHCHECK") :], flags=re.M)[:1]
    assert yaml.safe_load(check)[:3] == ["dagster", "api", "grpc-health-check"]
    assert "lgm_pipeline-*.whl" in text  # installs the wheel, not the source tree


@pytest.mark.parametrize("name", ["docker-compose.yaml", "helm/values.yaml", "dagster.yaml"])
def test_no_file_carries_a_key_like_value(name: str) -> None:
    text = (DEPLOY / name).read_text()
    assert not re.search(r"(?i)(api_key|password)\s*[:=]\s*['\"]?[A-Za-z0-9]{12,}", text), shlex.quote(name)
