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
    mailboxes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Serve this many mailboxes of --messages each, named like --mailbox with "
            "-1, -2, … before the @ (user-1@contoso.example, …), each with Graph's limits.",
        ),
    ] = 1,
) -> None:
    """Serve the Graph simulator (token endpoint, directory, mail API) until interrupted."""
    from mailsync.simulator import serve_forever  # the simulator's imports, for this only

    serve_forever(host, port, dict.fromkeys(mailbox_names(mailbox, mailboxes), messages), seed)


def mailbox_names(mailbox: str, count: int) -> list[str]:
    """``mailbox`` itself, or ``count`` names made from it."""
    if count == 1:
        return [mailbox]
    local, _, domain = mailbox.partition("@")
    return [f"{local}-{i}@{domain}" for i in range(1, count + 1)]
