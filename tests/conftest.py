"""Test configuration.

Every `omni_blocks` module is imported through jaxtyping's import hook with beartype, so the
shape annotations of every public function are checked at run time during the tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jaxtyping import install_import_hook

# The test helpers (`tiny_data`) and the recipes (`mini_omni`) import by name from any
# folder of the tree (the tests mirror the package: tests/sampling/, tests/data/, ...).
TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent / "examples")]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

install_import_hook("omni_blocks", "beartype.beartype")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", deadline=None, max_examples=60)
settings.load_profile("ci")
torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)
