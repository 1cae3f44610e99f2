"""The process's garbage-collector policy (mailsync.collector), as a deployment's flow run
gets it: from its first call for the runtime, not from the ``mailsync`` command."""

from __future__ import annotations

import subprocess
import sys

from mailsync.collector import YOUNG_THRESHOLD


def test_the_first_runtime_of_a_process_sets_the_gc_policy() -> None:
    code = (
        "import gc; from mailsync.runtime import get_runtime; before = gc.get_threshold()[0];"
        " get_runtime(); print(before, gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    before, after, frozen = child.stdout.split()
    assert before != str(YOUNG_THRESHOLD)  # Python's own default, whatever it is
    assert (after, frozen) == (str(YOUNG_THRESHOLD), "True")
