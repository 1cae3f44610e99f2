"""The process's garbage-collector policy (mailsync.collector), as a deployment's flow run
gets it: from its first call for the runtime, not from the ``mailsync`` command."""

from __future__ import annotations

import subprocess
import sys


def test_the_first_runtime_of_a_process_settles_the_collector() -> None:
    code = (
        "import gc; from mailsync.runtime import get_runtime; before = gc.get_threshold()[0];"
        " get_runtime(); print(before, gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.split() == ["700", "50000", "True"]
