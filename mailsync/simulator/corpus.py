"""The raw material generated mail is made of: a fixed paragraph pool, people and topics.

Bodies are 1-6 KB of html each; holding 100,000 of them as strings would cost ~350 MB, so a
message keeps only ``(first paragraph, count)`` into this pool and its html is one slice of
a blob in which the pool is laid out twice (any run of consecutive paragraphs, wrapping
around, is contiguous there). The pool is also kept as pre-escaped JSON fragments, so the
server splices bodies into JSON without building or escaping the string at all.

The pool uses a fixed seed: it is part of the data format, identical for every mailbox.
"""

from __future__ import annotations

import bisect
import json
import random

POOL_SIZE = 256

_WORDS = (
    "the quarterly budget review meeting project timeline deliverables customer feedback "
    "please find attached report draft proposal schedule update team notes action items "
    "follow up regarding contract renewal invoice payment shipment delivery warehouse "
    "inventory forecast revenue margin pipeline sprint release deployment incident review "
    "postmortem architecture migration database latency throughput capacity planning "
    "onboarding training policy compliance audit security patch vulnerability access "
    "request approval manager director offsite agenda minutes summary thanks regards "
    "Zürich Malmö São Paulo café naïve façade résumé R&amp;D Q3 Q4 KPI OKR roadmap"
).split()
HTML_HEAD = (
    '<html><head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    "\r\n</head>\r\n<body>\r\n"
)
HTML_TAIL = "</body>\r\n</html>\r\n"


def json_fragment(text: str) -> bytes:
    """``text`` as it appears inside a JSON string literal (UTF-8, quotes stripped)."""
    return json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")


def _build_pool() -> tuple[tuple[str, ...], tuple[str, ...], tuple[bytes, ...]]:
    rng = random.Random(20240101)
    texts: list[str] = []
    for _ in range(POOL_SIZE):
        target = rng.randint(120, 480)
        words: list[str] = []
        length = 0
        while length < target:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        sentence = " ".join(words)
        texts.append(sentence[0].upper() + sentence[1:] + ".")
    html = tuple(f"<p>{t}</p>\r\n" for t in texts)
    return tuple(texts), html, tuple(json_fragment(h) for h in html)


PARA_TEXT, _PARA_HTML, _PARA_JSON = _build_pool()
_HEAD_JSON = json_fragment(HTML_HEAD)
_TAIL_JSON = json_fragment(HTML_TAIL)
WRAPPER_LEN = len(HTML_HEAD) + len(HTML_TAIL)


def _offsets(parts: tuple[str, ...] | tuple[bytes, ...]) -> list[int]:
    out = [0]
    for part in parts:
        out.append(out[-1] + len(part))
    return out


_HTML_BLOB = "".join(_PARA_HTML * 2)
_HTML_OFF = _offsets(_PARA_HTML * 2)
_JSON_BLOB = b"".join(_PARA_JSON * 2)
_JSON_OFF = _offsets(_PARA_JSON * 2)


def body_html(first: int, count: int) -> str:
    return HTML_HEAD + _HTML_BLOB[_HTML_OFF[first] : _HTML_OFF[first + count]] + HTML_TAIL


def body_json(first: int, count: int) -> bytes:
    """The body's html JSON-escaped, UTF-8, without the surrounding quotes."""
    return _HEAD_JSON + _JSON_BLOB[_JSON_OFF[first] : _JSON_OFF[first + count]] + _TAIL_JSON


def body_length(first: int, count: int) -> int:
    """Characters of ``body_html(first, count)`` without building it."""
    return WRAPPER_LEN + _HTML_OFF[first + count] - _HTML_OFF[first]


def body_span(rng: random.Random) -> tuple[int, int]:
    """A random body of 1-6 KB: (first paragraph, count)."""
    # Paragraphs are <=490 chars and the wrapper ~110, so stopping at <5500 keeps it < 6 KB.
    target = 1100 + int(rng.random() * 4400) - WRAPPER_LEN
    first = int(rng.random() * POOL_SIZE)
    end = bisect.bisect_left(_HTML_OFF, _HTML_OFF[first] + target)
    return first, end - first


# --- people and subjects --------------------------------------------------------------------

PEOPLE = (
    ("Adele Vance", "adele.vance@contoso.example"),
    ("Alex Wilber", "alex.wilber@contoso.example"),
    ("Diego Siciliani", "diego.siciliani@contoso.example"),
    ("Grady Archie", "grady.archie@contoso.example"),
    ("Henrietta Mueller", "henrietta.mueller@contoso.example"),
    ("Isaiah Langer", "isaiah.langer@contoso.example"),
    ("Johanna Lorenz", "johanna.lorenz@contoso.example"),
    ("Joni Sherman", "joni.sherman@contoso.example"),
    ("Lee Gu", "lee.gu@contoso.example"),
    ("Lidia Holloway", "lidia.holloway@contoso.example"),
    ("Lynne Robbins", "lynne.robbins@contoso.example"),
    ("Megan Bowen", "megan.bowen@contoso.example"),
    ("Miriam Graham", "miriam.graham@contoso.example"),
    ("Nestor Wilke", "nestor.wilke@contoso.example"),
    ("Patti Fernandez", "patti.fernandez@contoso.example"),
    ("Pradeep Gupta", "pradeep.gupta@contoso.example"),
    ("Zoë Ångström", "zoe.angstrom@fabrikam.example"),
    ("José Muñoz", "jose.munoz@fabrikam.example"),
    ("Søren Kierkegaard", "soren.k@fabrikam.example"),
    ("田中 太郎", "tanaka.taro@fabrikam.example"),
    ("Billing", "billing@fabrikam.example"),
    ("No Reply", "noreply@notifications.fabrikam.example"),
)
TOPICS = (
    "Q3 budget review",
    "Project Falcon timeline",
    "Contract renewal",
    "Invoice 4711",
    "Sprint 42 retrospective",
    "Incident postmortem: checkout latency",
    "Offsite agenda",
    "Café meeting — Thursday",
    "Übersicht Projekt Nord",
    "日本出張の件",
    "Security patch rollout",
    "Onboarding checklist",
    "Quarterly KPI dashboard",
    "Warehouse inventory forecast",
    "Access request approval",
)
ATTACHMENT_KINDS = (
    ("report-{n}.pdf", "application/pdf"),
    ("invoice-{n}.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("minutes-{n}.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("image{n}.png", "image/png"),
    ("photo-{n}.jpg", "image/jpeg"),
    ("notes-{n}.txt", "text/plain"),
)
CATEGORIES = ("Red category", "Blue category", "Green category", "Project Falcon", "Follow up")
