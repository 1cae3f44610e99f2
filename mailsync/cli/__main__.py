"""``python -m mailsync.cli``: the `mailsync` command of this interpreter."""

from __future__ import annotations

from mailsync.cli import main

main()
