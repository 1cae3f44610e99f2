"""The documentation stays true and says each thing once.

Every document the code, the README or prefect.yaml names exists; every relative link of the
project's markdown resolves (to a file, and to a heading when it names one); every path a
document names exists; no paragraph is written twice; the deployment tables are
prefect.yaml's; CI runs the README's test command; the README stays short. No I/O beyond
reading the checkout's files."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNED = {".py", ".md", ".yaml", ".yml", ".sql", ".toml"}
# A repository path such as docs/security.md, not the tail of a URL or of another path.
DOC_PATH = re.compile(r"(?<![\w/.-])docs/[\w./-]+?\.md\b")
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
# Fenced code, also when indented under a list item.
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.MULTILINE | re.DOTALL)


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


# --- Each paragraph lives once ---------------------------------------------------------
# Two copies of a paragraph drift apart (the README once showed four deployments while
# docs/schedule.md and prefect.yaml had five). The README, docs/ and deployments/README.md
# say each thing once and link to it; a paragraph, list item or table row of at least
# MIN_WORDS words that appears twice, after normalising what does not change its meaning,
# fails here.

MIN_WORDS = 20
EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
HEADING = re.compile(r"^\s*#{1,6}\s")
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
SENTENCE_END = re.compile(r"(?<=[.;!?])\s+")


def documentation() -> list[Path]:
    """The prose that must not repeat itself: README.md, docs/*.md, deployments/README.md."""
    files = [REPO_ROOT / "README.md", REPO_ROOT / "deployments" / "README.md"]
    return files + sorted((REPO_ROOT / "docs").glob("*.md"))


def normalise(block: str) -> str:
    """One block as its words: links as their text, no emphasis or code marks, no list
    marker, lower case, whitespace collapsed."""
    text = LINK_TEXT.sub(r"\1", block)
    text = EMPHASIS.sub("", text)
    text = LIST_MARK.sub("", text)
    return " ".join(text.lower().split())


def blocks(markdown: str) -> list[str]:
    """Paragraphs, list items (each with its continuation lines) and table rows, outside
    fenced code; headings and table rules are not prose."""
    found: list[str] = []
    current: list[str] = []

    def close() -> None:
        if current:
            found.append("\n".join(current))
            current.clear()

    for line in FENCE.sub("\n", markdown).splitlines():
        if not line.strip() or HEADING.match(line) or TABLE_RULE.match(line):
            close()
        elif line.lstrip().startswith("|"):
            close()
            found.append(line)
        elif LIST_MARK.match(line):
            close()
            current.append(line)
        else:
            current.append(line)
    close()
    return found


def long_units(text: str) -> set[str]:
    """A normalised block and each of its sentences, those of at least MIN_WORDS words: a
    copy that drifted in one sentence still repeats the others."""
    sentences = SENTENCE_END.split(text)
    return {unit for unit in [text, *sentences] if len(unit.split()) >= MIN_WORDS}


def repeated_blocks(documents: dict[str, str]) -> dict[str, list[str]]:
    """{normalised block or sentence: the documents holding it} for every long one found
    twice."""
    seen: dict[str, list[str]] = {}
    for name, markdown in documents.items():
        for block in blocks(markdown):
            for unit in long_units(normalise(block)):
                seen.setdefault(unit, []).append(name)
    return {text: names for text, names in seen.items() if len(names) > 1}


def test_no_paragraph_is_written_twice() -> None:
    documents = {p.relative_to(REPO_ROOT).as_posix(): p.read_text() for p in documentation()}
    repeated = repeated_blocks(documents)
    assert not repeated, "written twice (keep one, link to it):\n" + "\n".join(
        f"{names}: {text[:120]}…" for text, names in repeated.items()
    )


def test_the_documentation_scanned_is_there() -> None:
    assert all(path.is_file() for path in documentation())
    assert len(documentation()) >= 6


WORDS = " ".join(f"word{i}" for i in range(MIN_WORDS))


def test_a_repeated_paragraph_is_found_across_wrapping_emphasis_and_links() -> None:
    one = f"# A\n\nIntro.\n\n{WORDS} in [docs](guide/x.md).\n"
    two = "Other.\n\n- " + WORDS.replace(" ", "\n  ", 3).replace("word3", "**word3**")
    two += " in [docs](x.md).\n"
    assert list(repeated_blocks({"one.md": one, "two.md": two}).values()) == [["one.md", "two.md"]]


def test_a_copy_that_drifted_in_one_sentence_still_repeats_the_others() -> None:
    one = f"Short start. {WORDS} first. Short end.\n"
    two = f"Another start, longer. {WORDS} first. Short end.\n"
    assert repeated_blocks({"one.md": one, "two.md": two}) == {
        f"{WORDS} first.": ["one.md", "two.md"]
    }


def test_a_repeat_inside_one_document_counts_too() -> None:
    text = f"{WORDS}\n\n| {WORDS} |\n\n{WORDS}\n"
    assert repeated_blocks({"one.md": text}) == {WORDS: ["one.md", "one.md"]}


def test_short_paragraphs_code_and_different_words_are_not_repeats() -> None:
    short = " ".join(WORDS.split()[: MIN_WORDS - 1])
    one = f"{short}\n\n```\n{WORDS}\n```\n\n{WORDS} one\n"
    two = f"{short}\n\n```\n{WORDS}\n```\n\n{WORDS} two\n"
    assert repeated_blocks({"one.md": one, "two.md": two}) == {}


def test_code_fenced_under_a_list_item_is_not_prose() -> None:
    markdown = f"1. Run:\n   ```sql\n   -- {WORDS}\n   ```\n2. Then.\n"
    assert blocks(markdown) == ["1. Run:", "2. Then."]


def test_list_items_are_blocks_of_their_own() -> None:
    markdown = (
        "Intro line\n- first item\n  continued\n- second\n\n| a | b |\n|---|---|\n| c | d |\n"
    )
    assert blocks(markdown) == [
        "Intro line",
        "- first item\n  continued",
        "- second",
        "| a | b |",
        "| c | d |",
    ]


# --- What the documentation names is there ---------------------------------------------
# The code was reorganised into subpackages; a document that still names graph.py or
# chunks.py sends a newcomer nowhere. Every repository path in code marks (`a/b.py`,
# `sql/migrations/`) outside fenced code must exist, from the root or from the document.

REPO_FILE = re.compile(r"(?:[\w.-]+/)+[\w.-]+\.(?:py|sql|md|yaml|yml|json|toml)")
REPO_FOLDER = re.compile(r"(?:[\w.-]+/)+")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def named_paths(markdown: str) -> list[str]:
    """The repository paths a document names in code marks (a test id's ``::`` part cut)."""
    spans = [span.split("::")[0] for span in CODE_SPAN.findall(FENCE.sub("", markdown))]
    return [span for span in spans if REPO_FILE.fullmatch(span) or REPO_FOLDER.fullmatch(span)]


def test_named_paths_are_recognised() -> None:
    text = "`mailsync/graph/client.py`, `sql/migrations/`, `graph.py`, `a b/c.py`, `x.y`\n"
    text += "`tests/e2e/test_x.py::test_y` and\n```\n`in/a/fence.py`\n```\n"
    assert named_paths(text) == [
        "mailsync/graph/client.py",
        "sql/migrations/",
        "tests/e2e/test_x.py",
    ]


# docs/benchmark.md is a dated record: each section names the code as it was measured.
DATED_RECORDS = {"docs/benchmark.md"}


@pytest.mark.parametrize(
    "markdown",
    [
        path
        for path in (p.relative_to(REPO_ROOT).as_posix() for p in documentation())
        if path not in DATED_RECORDS
    ],
)
def test_every_path_a_document_names_exists(markdown: str) -> None:
    source = REPO_ROOT / markdown
    missing = [
        path
        for path in named_paths(source.read_text())
        if not ((REPO_ROOT / path).exists() or (source.parent / path).exists())
    ]
    assert not missing, f"{markdown} names paths that do not exist: {missing}"


# --- The deployments the documents list are prefect.yaml's -------------------------------
# The README once listed four deployments while prefect.yaml had five.

DEPLOYMENT_ROW = re.compile(r"^\|\s*`([\w-]+/[\w-]+)`\s*\|", re.MULTILINE)


def flow_name(entrypoint: str) -> str:
    """The name in ``@flow(name=...)`` of an entrypoint's function, read from its source."""
    path, function = entrypoint.split(":")
    tree = ast.parse((REPO_ROOT / path).read_text())
    [definition] = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function
    ]
    for decorator in definition.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "flow":
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return function.replace("_", "-")  # Prefect's default name


def prefect_yaml_deployments() -> set[str]:
    specs = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    return {f"{flow_name(spec['entrypoint'])}/{spec['name']}" for spec in specs}


def test_prefect_yaml_is_read_as_flow_slash_deployment() -> None:
    assert "sync-mailbox/hourly" in prefect_yaml_deployments()


@pytest.mark.parametrize("markdown", ["README.md", "docs/schedule.md"])
def test_the_deployment_tables_list_prefect_yamls_deployments(markdown: str) -> None:
    listed = set(DEPLOYMENT_ROW.findall((REPO_ROOT / markdown).read_text()))
    assert listed == prefect_yaml_deployments()


def test_the_readme_stays_a_first_hour_read() -> None:
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 250
