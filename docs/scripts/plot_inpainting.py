"""Draw the figure of docs/tutorials/inpainting.md into docs/images/inpainting.png.

Run from the repository root (the PNG is committed; re-run after changing the tutorial):

    PYTHONPATH=src python docs/scripts/plot_inpainting.py

The figure is what the tutorial's own code draws: this script runs the page's ```python
blocks in order (as tests/test_docs.py does) in a temporary directory, then copies the
`inpainting.png` they save. About 20 seconds on one CPU core.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parent.parent
PAGE = DOCS / "tutorials" / "inpainting.md"
OUT = DOCS / "images" / "inpainting.png"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def main() -> None:
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": "inpainting_tutorial"}
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        try:
            for i, block in enumerate(FENCE.findall(PAGE.read_text())):
                code = compile(block, f"{PAGE.name}[block {i}]", "exec", dont_inherit=True)
                exec(code, namespace)
            shutil.copyfile(Path(work) / "inpainting.png", OUT)
        finally:
            os.chdir(here)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
