"""Generate one API reference page per public module of `omni_blocks` (mkdocs-gen-files).

Every module under `src/omni_blocks` that is not private (no leading underscore) gets a page,
so a new module appears in the reference without editing any list.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

root = Path(__file__).parent.parent.parent
src = root / "src"
nav = mkdocs_gen_files.Nav()

for path in sorted((src / "omni_blocks").rglob("*.py")):
    module_path = path.relative_to(src).with_suffix("")
    parts = tuple(module_path.parts)
    if parts[-1] == "__main__" or any(p.startswith("_") and p != "__init__" for p in parts):
        continue
    doc_path = Path(*parts).with_suffix(".md")
    if parts[-1] == "__init__":
        parts = parts[:-1]
        doc_path = Path(*parts, "index.md")
    full_doc_path = Path("reference", doc_path)
    nav[parts] = doc_path.as_posix()
    with mkdocs_gen_files.open(full_doc_path, "w") as fd:
        fd.write(f"# `{'.'.join(parts)}`\n\n::: {'.'.join(parts)}\n")
    mkdocs_gen_files.set_edit_path(full_doc_path, path.relative_to(root))

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as nav_file:
    nav_file.writelines(nav.build_literate_nav())
