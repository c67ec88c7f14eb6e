"""Every ```python block of the docs runs as written.

Blocks of one page run in order in one namespace (like a notebook), in a temporary working
directory. Code that cannot run here (it needs the internet or a GPU) is fenced as ```py: it
is highlighted the same way but not executed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted(p for p in DOCS.rglob("*.md") if FENCE.search(p.read_text()))


def test_docs_have_runnable_examples() -> None:
    assert PAGES, "no ```python block found under docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(FENCE.findall(page.read_text())):
        # dont_inherit: run the block like a user script, without this file's __future__ flags
        # (postponed annotations would make dataclasses look up a module that does not exist)
        code = compile(block, f"{page.relative_to(DOCS)}[block {i}]", "exec", dont_inherit=True)
        exec(code, namespace)
