"""Every `model:` YAML snippet of the docs builds with the real `omni-blocks` CLI.

The snippets are fragments; each is laid over the complete config of the "Train from a
config" page (`docs/first-config.md`, its `toy.yaml`) as a second `--config`, which is how a
reader would use it (only their `model` section: the data of a fragment belong to another
layout), and the model and data are built (not trained). Snippets that need the
network (hub weights) or a module of the reader's own (`my_lab.schedules`) are left out;
`tests/test_block_configs.py` covers those blocks another way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from omni_blocks.cli import cli
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.vocab import VocabLayout

DOCS = Path(__file__).resolve().parents[2] / "docs"
YAML_FENCE = re.compile(r"^```yaml([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
NEEDS_MORE = ("my_lab.", "my_package.", "Dream-org/", "showlab/", "THUDM/")
"""Snippets naming these need the network or the reader's own code."""
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
"""The captions of the config page's toy task."""


def snippets() -> list[tuple[str, str, str]]:
    """(page, attributes, text) of every YAML block of the docs."""
    return [
        (str(page.relative_to(DOCS)), m.group(1).strip(), m.group(2))
        for page in sorted(DOCS.rglob("*.md"))
        for m in YAML_FENCE.finditer(page.read_text())
    ]


def titled(name: str) -> str:
    (text,) = [t for _, attrs, t in snippets() if f'title="{name}"' in attrs]
    return text


MODEL_SNIPPETS = [
    (page, i, text)
    for i, (page, attrs, text) in enumerate(snippets())
    if not attrs
    and isinstance(yaml.safe_load(text), dict)
    and isinstance(yaml.safe_load(text).get("model"), dict)
    and not any(marker in text for marker in NEEDS_MORE)
]


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["omni-blocks"])


def make_toy_folder(folder: Path) -> Path:
    """What the config page's first steps write: data/t2i.jsonl, tokenizer/, toy.yaml."""
    (folder / "data").mkdir()
    lines = [json.dumps({"caption": w, "image_codes": [i % 16] * 4}) for i, w in enumerate(WORDS)]
    (folder / "data" / "t2i.jsonl").write_text("\n".join(lines) + "\n")
    TextTokenizer.train_bpe(WORDS * 4, vocab_size=300, min_frequency=1).save_pretrained(
        folder / "tokenizer"
    )
    (folder / "toy.yaml").write_text(titled("toy.yaml"))
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the config page."""
    return make_toy_folder(tmp_path_factory.mktemp("toy"))


def build(folder: Path, monkeypatch: pytest.MonkeyPatch, *fragments: str) -> Any:
    monkeypatch.chdir(folder)
    args = ["--config", "toy.yaml"]
    for i, text in enumerate(fragments):
        path = folder / f"fragment{i}.yaml"
        path.write_text(text)
        args += ["--config", str(path)]
    return cli(args, run=False)


def test_the_config_page_layout_is_the_tokenizers(toy: Path) -> None:
    """toy.yaml's layout numbers are what the page's tokenizer gives (they are copied)."""
    config = yaml.safe_load(titled("toy.yaml"))
    text = TextTokenizer.train_bpe(WORDS * 4, vocab_size=300, min_frequency=1)
    layout = VocabLayout(text.codebook_size, 0, 16, special_ids=text.special_ids)
    assert VocabLayout.from_dict(config["model"]["layout"]) == layout
    assert config["model"]["backbone"]["init_args"]["vocab_size"] >= layout.vocab_size


def test_there_are_snippets_to_check() -> None:
    pages = {page for page, _, _ in MODEL_SNIPPETS}
    assert {"getting-started.md", "tutorials/swap-sampler.md", "concepts/module.md"} <= pages


@pytest.mark.parametrize(
    ("page", "index", "text"), MODEL_SNIPPETS, ids=[f"{p}-{i}" for p, i, _ in MODEL_SNIPPETS]
)
def test_model_snippet_builds_over_the_toy_config(
    toy: Path, monkeypatch: pytest.MonkeyPatch, page: str, index: int, text: str
) -> None:
    model = yaml.safe_load(text)["model"]
    run = build(toy, monkeypatch, yaml.safe_dump({"model": model}))  # its model section
    assert isinstance(run.model, OmniDiffusionModule)
    # every block the snippet names is the block the model got
    model = model.get("init_args", model) if "class_path" in model else model
    for key, value in model.items():
        if isinstance(value, dict) and "class_path" in value:
            attribute = {"optimizer": "optimizer_factory"}.get(key, key)
            built = getattr(run.model, attribute)
            assert type(built).__name__ == value["class_path"].rsplit(".", 1)[-1], (page, key)


def test_swapped_sampler_keeps_the_rest(toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = build(toy, monkeypatch, titled("threshold.yaml"))
    sampler = run.model.sampler
    assert type(sampler.planner).__name__ == "ThresholdPlanner"
    assert type(sampler.scorer).__name__ == "MaxProbScorer"
    assert sampler.choice.top_p == 0.9  # kept from toy.yaml
    assert run.datamodule.templates["t2i"].image_tokens == 4
    with torch.no_grad():
        logits = run.model(torch.zeros(1, 3, dtype=torch.long))
    assert logits.shape == (1, 3, 309)
