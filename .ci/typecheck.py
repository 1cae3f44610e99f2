"""mypy over the product code, each module under the name it is installed as.

flows/, tasks/, sql/ and deployments/ sit at the top of the checkout but install as
mailsync.flows, mailsync.tasks, ... (pyproject's [tool.setuptools.package-dir]). Plain
`mypy flows` would check flows/cleanup.py as a module `flows.cleanup`, and could not resolve
`import mailsync.tasks.recover` at all: an editable install reaches those packages through
an import hook, which mypy does not run. So this script takes the files mypy would check
(pyproject's [tool.mypy] `files`, or the arguments), renames the modules as the package-dir
table says, and runs one mypy build over them. Paths in its messages are the real files.

    python .ci/typecheck.py            # what .ci/run runs
    python .ci/typecheck.py flows      # a part
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[1]


def installed_names() -> dict[str, str]:
    """{top-level folder: installed package}, e.g. {"flows": "mailsync.flows"}."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools["package-dir"]
    return {folder: package for package, folder in package_dir.items() if "/" not in folder}


def renamed(source: BuildSource, names: dict[str, str]) -> BuildSource:
    top, dot, rest = (source.module or "").partition(".")
    if top not in names:
        return source
    return BuildSource(source.path, names[top] + dot + rest, source.text, source.base_dir)


def main(argv: list[str]) -> int:
    sources, options = process_options(argv)
    names = installed_names()
    try:
        result = build.build([renamed(source, names) for source in sources], options)
    except CompileError as exc:  # a blocking error: a syntax error, a module found twice
        print("\n".join(exc.messages))
        return 2
    for line in result.errors:
        print(line)
    files = len({e.split(":", 1)[0] for e in result.errors if ": error:" in e})
    errors = sum(": error:" in e for e in result.errors)
    checked = len(sources)
    if errors:
        print(f"Found {errors} errors in {files} files (checked {checked} source files)")
        return 1
    print(f"Success: no issues found in {checked} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
