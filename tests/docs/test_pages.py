"""Every ```python block of the docs runs as written.

Blocks of one page run in order in one namespace (like a notebook), in a temporary working
directory. Code that cannot run here (it needs the internet or a GPU) is fenced as ```py: it
is highlighted the same way but not executed.

A block of another language with a title, such as ```yaml title="toy.yaml"```, is a file
the reader is asked to create: it is written to that path (relative to the working
directory) when the page reaches it, so that later Python blocks can use it (a config for
`omni_blocks.cli.cli`, for example).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
FILE_FENCE = re.compile(
    r'^```(?!python)\w*[^\n]*?\btitle="([^"]+)"[^\n]*\n(.*?)^```', re.DOTALL | re.MULTILINE
)
PAGES = sorted(p for p in DOCS.rglob("*.md") if FENCE.search(p.read_text()))


def steps(text: str) -> list[tuple[str, str, str]]:
    """The page's python blocks `("run", "", code)` and files `("file", path, content)`."""
    found = [(m.start(), "run", "", m.group(1)) for m in FENCE.finditer(text)]
    found += [(m.start(), "file", m.group(1), m.group(2)) for m in FILE_FENCE.finditer(text)]
    return [(kind, name, body) for _, kind, name, body in sorted(found)]


def test_docs_have_runnable_examples() -> None:
    assert PAGES, "no ```python block found under docs/"


def test_file_blocks_are_found() -> None:
    text = 'a\n```yaml title="x/a.yaml"\nk: 1\n```\n```python\nprint(1)\n```\n```text\nno\n```\n'
    assert steps(text) == [("file", "x/a.yaml", "k: 1\n"), ("run", "", "print(1)\n")]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # run like a script: command-line tools the page calls (LightningCLI) see no pytest flags
    monkeypatch.setattr("sys.argv", [page.name])
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    blocks = 0
    for kind, name, body in steps(page.read_text()):
        if kind == "file":
            path = PurePosixPath(name)
            assert not path.is_absolute() and ".." not in path.parts, f"file block {name!r}"
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(body)
            continue
        # dont_inherit: run the block like a user script, without this file's __future__ flags
        # (postponed annotations would make dataclasses look up a module that does not exist)
        label = f"{page.relative_to(DOCS)}[block {blocks}]"
        exec(compile(body, label, "exec", dont_inherit=True), namespace)
        blocks += 1
