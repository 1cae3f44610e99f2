"""`mailsync simulator`: serve the Graph simulator in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer


def simulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8765,
    messages: Annotated[int, typer.Option(help="Messages in the mailbox.")] = 10_000,
    mailbox: Annotated[str, typer.Option(help="The mailbox's UPN.")] = "user@contoso.example",
    seed: Annotated[int, typer.Option(help="Seed of the generated mailbox.")] = 1,
) -> None:
    """Serve the Graph simulator (token endpoint + mail API) until interrupted."""
    from mailsync.simulator import serve_forever  # the simulator's imports, for this only

    serve_forever(host, port, {mailbox: messages}, seed)
