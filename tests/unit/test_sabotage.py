"""Every edit of tests/sabotage.py still matches the source exactly once, so the check that
each fault test fails without its mechanism cannot rot silently when the code moves."""

from __future__ import annotations

import pytest

from tests.sabotage import CASES, ROOT

EDITS = [(case.name, rel, old) for case in CASES for rel, old, _new in case.edits]


@pytest.mark.parametrize(("case", "rel", "old"), EDITS, ids=[f"{e[0]}:{e[1]}" for e in EDITS])
def test_sabotage_edit_still_applies(case: str, rel: str, old: str) -> None:
    assert (ROOT / rel).read_text().count(old) == 1, f"{case}: edit no longer matches in {rel}"
