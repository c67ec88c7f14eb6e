"""A feature whose optional package is missing raises an ImportError naming the extra."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from omni_blocks._optional import require
from omni_blocks.data.manifest import load_image
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.tokenizers.audio import read_wav, resample


def _hf_backbone(tmp: Path) -> Any:
    from omni_blocks.backbones import HFBackbone

    return HFBackbone(str(tmp))


CASES: list[tuple[str, str, Callable[[Path], Any]]] = [
    ("tokenizers", "hf", lambda tmp: TextTokenizer.train_bpe(["a b"], vocab_size=300)),
    ("transformers", "hf", _hf_backbone),
    ("torchaudio", "audio", lambda tmp: resample(torch.zeros(10), 16_000, 8_000)),
    ("soundfile", "audio", lambda tmp: read_wav(tmp / "a.wav")),
    ("torchvision", "vision", lambda tmp: load_image(tmp / "a.png", 4)),
]


@pytest.mark.parametrize(("package", "extra", "call"), CASES, ids=[c[0] for c in CASES])
def test_a_missing_package_names_its_extra(
    package: str, extra: str, call: Callable[[Path], Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=rf"omni-blocks\[{extra}\]"):
        call(tmp_path)


def test_require_imports_what_is_there() -> None:
    assert require("math", "arithmetic").sqrt(4) == 2
    with pytest.raises(ImportError, match="pip install no_such_pkg"):
        require("no_such_pkg", "nothing")
