"""What `python -m mailsync.deployments.serve` would serve, checked against prefect.yaml read
independently, without serving (and without a Prefect server); and the work-pool templates
of deployments/work-pools, checked as a Prefect server checks them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailsync.deployments import serve
from mailsync.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = REPO_ROOT / "prefect.yaml"
TEMPLATES = REPO_ROOT / "deployments" / "work-pools"


def specs() -> list[dict[str, Any]]:
    return list(yaml.safe_load(PREFECT_FILE.read_text())["deployments"])


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    """{flow/deployment: runner deployment} as serve builds them."""
    return {f"{d.flow_name}/{d.name}": d for d in serve.build_deployments(PREFECT_FILE)}


def test_every_deployment_of_prefect_yaml_is_served_under_its_name(
    built: dict[str, Any],
) -> None:
    assert sorted(built) == [
        "chunk-report/daily",
        "cleanup/every-6h",
        "cleanup/recover-stuck",
        "subscriptions/hourly",
        "sync-all/every-15m",
        "sync-changed/on-change",
        "sync-mailbox/hourly",
    ]
    assert len(built) == len(specs())


@pytest.mark.parametrize("spec", specs(), ids=lambda spec: f"{spec['entrypoint']}:{spec['name']}")
def test_a_served_deployment_is_its_prefect_yaml_entry(
    built: dict[str, Any], spec: dict[str, Any]
) -> None:
    path, function = spec["entrypoint"].split(":")
    module = path.removesuffix(".py").replace("/", ".")
    [deployment] = [  # names repeat across flows (sync-mailbox/hourly, subscriptions/hourly)
        d
        for d in built.values()
        if d.name == spec["name"] and d.entrypoint == f"mailsync.{module}.{function}"
    ]
    assert deployment.entrypoint == f"mailsync.{module}.{function}"
    assert deployment.description == spec["description"]
    assert deployment.tags == spec["tags"]
    assert deployment.parameters == spec["parameters"]
    assert deployment.work_pool_name is None  # served: no pool
    assert len(deployment.schedules) == len(spec["schedules"])
    for served, declared in zip(deployment.schedules, spec["schedules"], strict=True):
        assert served.active == declared.get("active", True)
        assert served.parameters == declared.get("parameters", {})
        if "cron" in declared:
            assert served.schedule.cron == declared["cron"]
            assert served.schedule.timezone == declared["timezone"]
        else:
            assert served.schedule.interval.total_seconds() == declared["interval"]
    limit = spec.get("concurrency_limit")
    if limit is None:
        assert deployment.concurrency_limit is None
    else:
        assert deployment.concurrency_limit == limit["limit"]
        assert deployment.concurrency_options.collision_strategy == limit["collision_strategy"]


def test_the_sync_schedule_is_off_and_carries_its_mailbox(built: dict[str, Any]) -> None:
    [hourly] = built["sync-mailbox/hourly"].schedules
    assert not hourly.active
    assert hourly.parameters == {"mailbox": "someone@contoso.example"}


def test_a_flow_is_loaded_by_module_as_the_installed_package_has_it() -> None:
    from mailsync.flows.cleanup import cleanup

    assert serve.flow_module("flows/cleanup.py:cleanup") == ("mailsync.flows.cleanup", "cleanup")
    assert serve.load_flow("flows/cleanup.py:cleanup") is cleanup


@pytest.mark.parametrize(
    "entrypoint", ["flows/cleanup.py", "/abs/flows/cleanup.py:cleanup", "flows/cleanup:cleanup"]
)
def test_an_entrypoint_that_is_not_file_colon_flow_is_refused(entrypoint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("is not 'folder/file.py:flow'")):
        serve.flow_module(entrypoint)


def test_an_attribute_that_is_not_a_flow_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not a flow"):
        serve.load_flow("flows/cleanup.py:SKIPPED")


def test_templates_are_refused_rather_than_served_literally(tmp_path: Path) -> None:
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(
        "deployments:\n- name: x\n  entrypoint: flows/report.py:report\n"
        "  parameters: {since: '{{ prefect.variables.since }}'}\n"
    )
    with pytest.raises(ConfigError, match="templates"):
        serve.load_specs(prefect_file)


def test_list_prints_the_deployments_and_their_schedules_and_serves_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert serve.main(["--prefect-file", str(PREFECT_FILE), "--list"]) == 0
    out = capsys.readouterr().out
    assert "cleanup/recover-stuck  mailsync.flows.cleanup.cleanup" in out
    assert "active cron 0 */6 * * * (UTC)" in out
    assert 'off    every 3600 s {"mailbox": "someone@contoso.example"}' in out
    assert "concurrency limit 1, CANCEL_NEW" in out


def test_a_missing_prefect_yaml_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        serve.main(["--prefect-file", str(tmp_path / "prefect.yaml"), "--list"])
    assert exit_.value.code == 2
    assert "run from the checkout's root or pass --prefect-file" in capsys.readouterr().err


@pytest.mark.parametrize("template", sorted(TEMPLATES.glob("*.json")), ids=lambda p: p.stem)
def test_a_work_pool_template_is_one_prefect_accepts(template: Path) -> None:
    from prefect.server.schemas.actions import WorkPoolCreate

    base = json.loads(template.read_text())
    pool = WorkPoolCreate(name="mailsync-local", type=template.stem, base_job_template=base)
    default = _default_template(template.stem)
    # Prefect's keys for the type, each still there: the worker reads them by name.
    assert set(default["job_configuration"]) <= set(pool.base_job_template["job_configuration"])
    assert set(default["variables"]["properties"]) <= set(base["variables"]["properties"])


def test_the_kubernetes_job_takes_its_environment_from_a_kubernetes_secret() -> None:
    base = json.loads((TEMPLATES / "kubernetes.json").read_text())
    manifest = base["job_configuration"]["job_manifest"]
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "{{ secret_name }}"}}]
    assert base["variables"]["properties"]["secret_name"]["default"] == "mailsync"


def _default_template(pool_type: str) -> dict[str, Any]:
    """Prefect's own default base job template for a worker type (shipped with Prefect)."""
    import prefect

    metadata = (
        Path(prefect.__file__).parent
        / "server/api/collections_data/views/aggregate-worker-metadata.json"
    )
    for workers in json.loads(metadata.read_text()).values():
        if pool_type in workers:
            return dict(workers[pool_type]["default_base_job_configuration"])
    raise AssertionError(f"Prefect knows no worker type {pool_type!r}")


def test_changed_mailboxes_are_synced_per_business_debounced_one_run_at_a_time(
    built: dict[str, Any],
) -> None:
    assert not built["sync-mailbox/hourly"].triggers  # one run syncs them all, not one each
    deployment = built["sync-changed/on-change"]
    [trigger] = deployment.triggers
    assert trigger.expect == {"mailsync.mailbox.changed"}
    assert trigger.for_each == {"mailsync.business"}
    assert trigger.parameters == {"business_id": "{{ event.resource['mailsync.business'] }}"}
    # The run starts at once and asks Postgres until after the last event it absorbed.
    assert trigger.schedule_after.total_seconds() == 0
    parameters = deployment.parameters
    assert parameters["asks_for_s"] >= trigger.within.total_seconds() + 1
    assert parameters["debounce_s"] == 5  # a burst of notifications is one sync
    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
