"""Serve every deployment of prefect.yaml from one process, without a work pool.

    python -m mailsync.deployments.serve [--prefect-file prefect.yaml] [--limit N] [--list]

`prefect deploy` plus workers is the usual way to run prefect.yaml (docs/schedule.md). This
is the other way Prefect offers: ``prefect.serve(...)``, one long-lived process that
registers the deployments, schedules them and runs each flow run as its own subprocess.

The deployments are built from prefect.yaml itself (names, descriptions, tags, parameters,
schedules with their own parameters and ``active`` flags, concurrency limits), and each
schedule goes through the function `prefect deploy` uses for the same YAML, so serving and
deploying never disagree. Ignored here: ``work_pool`` and ``job_variables`` (flow runs are
subprocesses of this process and inherit its environment, as they would a worker's).

Flows are loaded by module (``flows/cleanup.py:cleanup`` is ``mailsync.flows.cleanup``,
where the project installs it), so a served flow run imports the installed package from any
working directory; only prefect.yaml is read from the checkout.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from mailsync.errors import ConfigError, MailsyncError

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentTriggerTypes

PREFECT_FILE = Path("prefect.yaml")
PACKAGE = "mailsync"  # flows/ and tasks/ install as mailsync.flows, mailsync.tasks


def load_specs(prefect_file: Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The ``deployments`` of a prefect.yaml (its YAML anchors resolved)."""
    try:
        config = yaml.safe_load(prefect_file.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no {prefect_file} here ({Path.cwd()}): run from the checkout's root or pass "
            "--prefect-file"
        ) from None
    specs = (config or {}).get("deployments") or []
    if not specs:
        raise ConfigError(f"{prefect_file} defines no deployments")
    # A trigger's parameters are templates the server fills when the trigger fires (from
    # the event): those are meant to stay; any other template is not.
    outside_triggers = [{k: v for k, v in spec.items() if k != "triggers"} for spec in specs]
    if "{{" in json.dumps(outside_triggers):
        # `prefect deploy` fills {{ … }} from build steps, variables and blocks; serving
        # does not, and a literal template must not reach a flow as a parameter.
        raise ConfigError(f"{prefect_file} uses {{{{ … }}}} templates, which serving does not fill")
    return list(specs)


def flow_module(entrypoint: str) -> tuple[str, str]:
    """(module, attribute) of a prefect.yaml entrypoint: ``flows/report.py:report`` is
    ``("mailsync.flows.report", "report")``."""
    path, sep, name = entrypoint.partition(":")
    if not sep or not path.endswith(".py") or path.startswith(("/", ".")):
        raise ConfigError(f"entrypoint {entrypoint!r} is not 'folder/file.py:flow'")
    return f"{PACKAGE}.{path.removesuffix('.py').replace('/', '.')}", name


def load_flow(entrypoint: str) -> Flow[..., Any]:
    from prefect import Flow

    module, name = flow_module(entrypoint)
    found = getattr(importlib.import_module(module), name, None)
    if not isinstance(found, Flow):
        raise ConfigError(f"entrypoint {entrypoint!r}: {module}.{name} is not a flow")
    return found


def schedule(config: dict[str, Any]) -> DeploymentScheduleCreate:
    """One schedule of prefect.yaml, read as `prefect deploy` reads it."""
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    # Private to Prefect (pinned to 3.8.8), used on purpose: the same function as the
    # deploy command, so a schedule cannot mean one thing here and another there.
    return DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(config))


def concurrency(value: int | dict[str, Any] | None) -> int | ConcurrencyLimitConfig | None:
    """``concurrency_limit``: a number, or ``{limit, collision_strategy, …}``."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    return ConcurrencyLimitConfig(**value) if isinstance(value, dict) else value


def trigger(config: dict[str, Any]) -> DeploymentTriggerTypes:
    """One trigger of prefect.yaml, validated as `prefect deploy` validates it."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    adapter: TypeAdapter[DeploymentTriggerTypes] = TypeAdapter(DeploymentTriggerTypes)
    return adapter.validate_python(config)


def build_deployment(spec: dict[str, Any]) -> RunnerDeployment:
    """A runner deployment for one entry of prefect.yaml's ``deployments``."""
    from prefect.deployments.runner import EntrypointType

    deployment = load_flow(spec["entrypoint"]).to_deployment(
        name=spec["name"],
        description=spec.get("description"),
        tags=spec.get("tags"),
        version=spec.get("version"),
        parameters=spec.get("parameters") or {},
        schedules=[schedule(config) for config in spec.get("schedules") or []],
        concurrency_limit=concurrency(spec.get("concurrency_limit")),
        triggers=[trigger(config) for config in spec.get("triggers") or []],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return cast("RunnerDeployment", deployment)  # called from sync code: not a coroutine


def build_deployments(prefect_file: Path = PREFECT_FILE) -> list[RunnerDeployment]:
    return [build_deployment(spec) for spec in load_specs(prefect_file)]


def describe(deployment: RunnerDeployment) -> str:
    """One line per deployment and one per schedule, for --list."""
    lines = [f"{deployment.flow_name}/{deployment.name}  {deployment.entrypoint}"]
    lines += [f"    parameters {json.dumps(deployment.parameters, sort_keys=True)}"]
    if deployment.concurrency_limit is not None:
        options = deployment.concurrency_options
        strategy = f", {options.collision_strategy.value}" if options else ""
        lines.append(f"    concurrency limit {deployment.concurrency_limit}{strategy}")
    for entry in deployment.schedules or []:
        state = "active" if entry.active else "off"
        extra = f" {json.dumps(entry.parameters, sort_keys=True)}" if entry.parameters else ""
        lines.append(f"    {state:6} {_schedule_text(entry.schedule)}{extra}")
    return "\n".join(lines)


def _schedule_text(spec: Any) -> str:
    if getattr(spec, "cron", None):
        return f"cron {spec.cron} ({spec.timezone or 'UTC'})"
    if getattr(spec, "interval", None):
        return f"every {spec.interval.total_seconds():g} s"
    return f"rrule {spec.rrule}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailsync.deployments.serve",
        description="Serve every deployment of prefect.yaml from this process (no work pool).",
    )
    parser.add_argument("--prefect-file", type=Path, default=PREFECT_FILE)
    parser.add_argument("--limit", type=int, default=None, help="flow runs at once (no limit)")
    parser.add_argument("--list", action="store_true", help="print the deployments and exit")
    args = parser.parse_args(argv)
    try:
        deployments = build_deployments(args.prefect_file)
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.list:
        print("\n".join(describe(deployment) for deployment in deployments))
        return 0
    try:
        serve_all(deployments, limit=args.limit)
    except MailsyncError as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0


def serve_all(deployments: Sequence[RunnerDeployment], limit: int | None = None) -> None:
    """Serve until stopped (Ctrl-C, SIGTERM); then pause the deployments' schedules, so
    that no runs pile up for a runner that is gone (serving again resumes them)."""
    from prefect import serve

    try:
        # Prefect's own pausing on shutdown is cut short by SIGTERM (3.8.8: its handler's
        # sys.exit cancels the loop after the first deployment), so it is done here.
        serve(*deployments, limit=limit, pause_on_shutdown=False)
    finally:
        pause(deployments)


def pause(deployments: Sequence[RunnerDeployment]) -> None:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            for deployment in deployments:
                found = client.read_deployment_by_name(f"{deployment.flow_name}/{deployment.name}")
                client.pause_deployment(found.id)
    except Exception as exc:  # the API is gone too: say so, and what stays scheduled
        raise MailsyncError(f"could not pause the served deployments: {exc}") from exc


if __name__ == "__main__":
    raise SystemExit(main())
