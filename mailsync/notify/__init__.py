"""Change notifications (issue 24): Graph tells us a mailbox changed; we sync it in seconds.

- ``receiver``: the ASGI app Graph POSTs to: the validation handshake, then each batch
  checked (subscription, clientState) and written to the outbox, answered 202
- ``subscriptions``: one Graph subscription per registered mailbox: created, renewed,
  re-created, deleted, reconciled with ``GET /subscriptions``
- ``relay``: outbox rows become Prefect events (``mailsync.mailbox.changed``), which the
  ``sync-changed`` deployment's trigger turns into one debounced run for every changed
  mailbox of the business (flows/sync_changed.py)
- ``secrets``: clientState secrets and their hashes

docs/notifications.md says how to run it.
"""
