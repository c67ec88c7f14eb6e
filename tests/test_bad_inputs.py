"""Every argument a user can get wrong is a clear error that names the argument and the
problem (at least 150 cases, listed one per line in `bad_input_cases.py`).

The cases run in a fresh interpreter, as a user's code does: the test-suite's run-time type
checking (jaxtyping + beartype) would otherwise answer before the library's own checks.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bad_input_cases import CASES, module, saved_folder
from omni_blocks.config import UntrustedConfigError
from omni_blocks.module import OmniDiffusionModule

HERE = Path(__file__).resolve().parent


@functools.cache
def outcomes() -> dict[str, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "src")])}
    result = subprocess.run(
        [sys.executable, str(HERE / "bad_input_cases.py")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    data: dict[str, dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


@pytest.mark.parametrize(
    ("name", "errors", "pattern"), [(c[0], c[2], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_error(
    name: str, errors: tuple[type[BaseException], ...], pattern: str
) -> None:
    outcome = outcomes()[name]
    assert any(e.__name__ in outcome["types"] for e in errors), outcome
    assert re.search(pattern, outcome["message"], re.IGNORECASE | re.DOTALL), outcome["message"]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 150
    assert len({c[0] for c in CASES}) == len(CASES)


def test_a_saved_config_naming_a_foreign_class_is_refused(tmp_path: Path) -> None:
    folder = saved_folder(tmp_path, {"schedule": {"class_path": "collections.OrderedDict"}})
    with pytest.raises(UntrustedConfigError, match=re.escape("collections.OrderedDict")):
        OmniDiffusionModule.from_pretrained(folder)
    assert module() is not None
