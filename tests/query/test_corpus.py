"""Every query and target condition from the public corpus parses (and invalid ones fail)."""

import re
from pathlib import Path

import pytest

from cloud_hub.query import QueryError, parse_condition, parse_query

CORPUS = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "queries" / "queries.tsv"
)


def _load() -> list[tuple[str, str, bool]]:
    cases = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, text, _source, note = (line.split("\t") + ["", "", ""])[:4]
        text = text.replace("\\n", "\n")
        # Entries copied from Python code carry format placeholders: `{device_id}` -> `device_id`.
        text = re.sub(r"\{(\w+)\}", r"\1", text)
        invalid = "invalid" in note.lower() or kind.lower().startswith("invalid")
        cases.append((kind, text, invalid))
    return cases


CASES = _load()


def test_corpus_is_not_empty() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize(("kind", "text", "invalid"), CASES, ids=[c[1][:60] for c in CASES])
def test_corpus_entry(kind: str, text: str, invalid: bool) -> None:
    parse = parse_query if text.lstrip().lower().startswith("select") else parse_condition
    if invalid:
        with pytest.raises(QueryError):
            parse(text)
    else:
        parse(text)
