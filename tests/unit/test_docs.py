"""Every document the code, the README or prefect.yaml names exists, and every relative link
of the project's markdown resolves (to a file, and to a heading when it names one)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNED = {".py", ".md", ".yaml", ".yml", ".sql", ".toml"}
# A repository path such as docs/security.md, not the tail of a URL or of another path.
DOC_PATH = re.compile(r"(?<![\w/.-])docs/[\w./-]+?\.md\b")
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def project_files(suffixes: set[str]) -> list[Path]:
    """The checkout's own files: no hidden folders (.git, .venv), no build output."""
    found = []
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [
            name
            for name in subfolders
            if not (name.startswith(".") or name.endswith(".egg-info") or name == "build")
        ]
        found += [Path(folder, name) for name in files if Path(name).suffix in suffixes]
    return sorted(found)


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation dropped, spaces
    as dashes."""
    anchors = set()
    for line in FENCE.sub("", markdown).splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def relative_links(markdown: str) -> list[str]:
    return [
        target
        for target in MD_LINK.findall(FENCE.sub("", markdown))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def referenced_docs() -> dict[str, list[str]]:
    """{docs/… path: files naming it}."""
    found: dict[str, list[str]] = {}
    for path in project_files(SCANNED):
        for doc in DOC_PATH.findall(path.read_text(errors="replace")):
            found.setdefault(doc, []).append(str(path.relative_to(REPO_ROOT)))
    return found


def test_the_scan_finds_the_documents_the_error_messages_name() -> None:
    found = referenced_docs()
    assert {"docs/security.md", "docs/schedule.md"} <= set(found)
    assert "mailsync/store/roles.py" in found["docs/security.md"]


def test_every_referenced_document_exists() -> None:
    found = referenced_docs()
    missing = {doc: files for doc, files in found.items() if not (REPO_ROOT / doc).is_file()}
    assert not missing, f"documents named but absent: {missing}"


@pytest.mark.parametrize(
    "markdown",
    [p.relative_to(REPO_ROOT).as_posix() for p in project_files({".md"})],
)
def test_relative_links_resolve(markdown: str) -> None:
    source = REPO_ROOT / markdown
    broken = []
    for target in relative_links(source.read_text()):
        path, _, anchor = target.partition("#")
        linked = (source.parent / path).resolve() if path else source
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            if anchor not in heading_anchors(linked.read_text()):
                broken.append(target)
    assert not broken, f"{markdown}: links that lead nowhere: {broken}"


def test_readme_is_checked() -> None:
    assert "README.md" in [p.name for p in project_files({".md"}) if p.parent == REPO_ROOT]


def test_anchors_follow_githubs_rule() -> None:
    anchors = heading_anchors("# Run it\n## Without a work pool: `prefect.serve`\n```\n# no\n```")
    assert anchors == {"run-it", "without-a-work-pool-prefectserve"}


def pytest_commands(text: str) -> set[str]:
    """The lines of a script or of fenced code that run pytest (without a trailing ``||``)."""
    return {
        line.split(" || ")[0].strip()
        for line in text.splitlines()
        if re.search(r"(^|&&)\s*pytest\b", line.strip()) and not line.lstrip().startswith("#")
    }


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    in_readme = pytest_commands("\n".join(block.group(0) for block in FENCE.finditer(readme)))
    assert in_readme, "the README shows no test command"
    assert pytest_commands((REPO_ROOT / ".ci" / "run").read_text()) == in_readme
