"""The process's garbage-collector policy, set once, by the first of the ``mailsync``
command and the first flow that asks for the runtime (a deployment's flow run, in a
process of its own, never runs the command; a test worker that runs flows in process
takes it from its first runtime too).

- **Freeze what exists.** Prefect's imports leave ~150,000 long-lived objects; the
  collector rescanned them all through a sync (~13 % of its CPU).
- **Collect the young generation after 50,000 objects, not 700.** A page parsed into
  dicts made ~6,000 containers (500 messages' dicts) that all die together when the page
  is written. At 700 each page set off about eight young collections, which promoted it
  and set off full ones: ~10 % of a sync's CPU, ~18 % with eight mailboxes' pages in
  flight. Pages free themselves (no cycles: ``mailsync.graph.client.unbind``), so waiting
  for 50,000 (more than eight pages' worth) leaves few collections and none during a page;
  peak RSS is unchanged (docs/benchmark.md, the A/B). Since the typed decode
  (mailsync.graph.wire) a page's structs are untracked and the dicts are left to the
  general parse and ``$batch`` answers; the threshold was measured before that and not
  since.
"""

from __future__ import annotations

import gc
import threading

YOUNG_THRESHOLD = 50_000

_lock = threading.Lock()
_done = False


def set_gc_policy() -> None:
    """Freeze the objects that exist now and raise the young generation's threshold; once
    per process (later calls do nothing, so the first caller decides what is frozen).

    No collection first: what is unreachable at the freeze stays for good, but it is only
    what the imports left (80 objects after the command's, against 63 ms for a full
    collection on every command's start), and nothing frozen later joins it."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD)
