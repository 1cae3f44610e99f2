"""`mailsync notifications serve|relay` and `mailsync subscriptions sync`: change
notifications (mailsync.notify, docs/notifications.md).

``serve`` runs the receiver Graph POSTs to (behind the HTTPS reverse proxy that
MAILSYNC_NOTIFICATION_URL names) and, unless ``--no-relay``, the relay that turns what it
wrote into Prefect events. ``relay`` runs the relay alone. ``subscriptions sync`` keeps one
subscription per registered mailbox, as the ``subscriptions/hourly`` deployment does.
"""

from __future__ import annotations

import json
import threading
from typing import Annotated

import typer

from mailsync import validate
from mailsync.cli.common import JsonOpt, configure_runtime, console, out, upgrade_database
from mailsync.notify.receiver import create_app
from mailsync.notify.relay import PrefectEmitter, Relay
from mailsync.notify.serve import ReceiverServer
from mailsync.notify.subscriptions import SubscriptionManager, public_url_from_env
from mailsync.runtime import Runtime
from mailsync.sync.jobs import default_business_id

notifications_app = typer.Typer(
    help="Receive Graph's change notifications and start syncs from them.", no_args_is_help=True
)
subscriptions_app = typer.Typer(
    help="Graph change-notification subscriptions, one per registered mailbox.",
    no_args_is_help=True,
)


def _relay(runtime: Runtime) -> Relay:
    """The relay; with MAILSYNC_NOTIFICATION_URL set it also handles lifecycle events that
    need Graph (re-create, reauthorize), else it only syncs."""
    public_url = public_url_from_env()
    if public_url is None:
        console.print(
            "[yellow]MAILSYNC_NOTIFICATION_URL is not set: lifecycle events will "
            "sync the mailbox but cannot re-create its subscription[/]"
        )
        return Relay(runtime.db, PrefectEmitter())
    return Relay(
        runtime.db,
        PrefectEmitter(),
        lambda business: SubscriptionManager(runtime.db, runtime.graph(), business, public_url),
    )


@notifications_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (the proxy's upstream).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8787,
    relay: Annotated[
        bool, typer.Option("--relay/--no-relay", help="Run the relay in this process too.")
    ] = True,
) -> None:
    """Receive Graph's notifications: POST /notifications, POST /lifecycle, GET /health."""
    runtime = configure_runtime()
    upgrade_database(runtime)
    worker = _relay(runtime) if relay else None
    stop = threading.Event()
    app = create_app(runtime.db, on_recorded=worker.wake.set if worker else None)
    server = ReceiverServer(app, host, port)
    thread = None
    if worker is not None:
        thread = threading.Thread(target=worker.run_forever, args=(stop,), name="relay")
        thread.start()
    console.print(f"receiving on {server.url} (relay: {'on' if worker else 'off'})")
    try:
        server.run()  # until Ctrl-C / SIGTERM (uvicorn's handlers)
    finally:
        stop.set()
        if worker is not None and thread is not None:
            worker.wake.set()
            thread.join(timeout=15)
        server.socket.close()


@notifications_app.command("relay")
def relay_command(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
) -> None:
    """Send waiting notifications to Prefect as mailsync.mailbox.changed events."""
    runtime = configure_runtime()
    upgrade_database(runtime)
    worker = _relay(runtime)
    if once:
        sent = worker.run_once()
        out.print(json.dumps({"sent": [s.__dict__ for s in sent]}))
        return
    stop = threading.Event()
    try:
        worker.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()


@subscriptions_app.command("sync")
def sync_subscriptions(
    business: Annotated[
        str | None,
        typer.Option("--business", help="Business (tenant) UUID; default: MAILSYNC_TENANT_ID's."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create, renew, re-create and delete subscriptions to match the mailbox registry."""
    runtime = configure_runtime()
    business_id = str(
        validate.business_id(business or default_business_id(runtime.settings.tenant_id))
    )
    public_url = public_url_from_env()
    upgrade_database(runtime)
    manager = SubscriptionManager(runtime.db, runtime.graph(), business_id, public_url)
    report = manager.sync().as_json()
    if as_json:
        out.print(json.dumps({"business_id": business_id, **report}), soft_wrap=True)
        return
    for action, items in report.items():
        if items:
            console.print(f"{action}: {', '.join(items)}")
    if report["failed"]:
        raise typer.Exit(1)
