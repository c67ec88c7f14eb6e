"""A saved model is someone else's file: loading it never runs code.

Each attack is built as a fixture: a folder or checkpoint whose author tries to make
omni_blocks import or execute something. Every payload would write a marker file; the tests
check that no marker appears and that the error says why.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from omni_blocks import VocabLayout
from omni_blocks.backbones import HFBackbone, NativeTransformer
from omni_blocks.cli import cli
from omni_blocks.config import UntrustedConfigError
from omni_blocks.module import OmniDiffusionModule

LAYOUT = VocabLayout(text_size=12, speech_size=0, image_size=0, special_ids={"mask": 11})


def tiny_module() -> OmniDiffusionModule:
    torch.manual_seed(0)
    backbone = NativeTransformer(LAYOUT.vocab_size, 16, 32, 1, 2)
    return OmniDiffusionModule(backbone, LAYOUT)


def remote_code_folder(root: Path, marker: Path, auto_map: dict[str, str] | None = None) -> Path:
    """A checkpoint folder whose configuration_*.py writes `marker` when imported."""
    folder = root / "remote"
    folder.mkdir(parents=True)
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    config = {
        "model_type": "evil",
        "auto_map": auto_map or {"AutoConfig": "configuration_evil.EvilConfig"},
        "vocab_size": 16,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def saved_with(root: Path, backbone: dict[str, Any]) -> Path:
    """A save_pretrained folder whose omni_blocks.json records `backbone` instead."""
    folder = tiny_module().save_pretrained(root / "saved")
    document = json.loads((folder / "omni_blocks.json").read_text())
    document["module"]["backbone"] = backbone
    (folder / "omni_blocks.json").write_text(json.dumps(document))
    return folder


@pytest.mark.parametrize(
    "class_path",
    [
        "omni_blocks.backbones.HFBackbone",  # the package alias
        "omni_blocks.backbones.hf.HFBackbone",  # the module path (the reported bypass)
    ],
)
def test_a_saved_trust_remote_code_is_refused(tmp_path: Path, class_path: str) -> None:
    marker = tmp_path / "marker"
    remote = remote_code_folder(tmp_path, marker)
    folder = saved_with(
        tmp_path,
        {
            "class_path": class_path,
            "init_args": {"pretrained": str(remote), "trust_remote_code": True},
        },
    )
    with pytest.raises(UntrustedConfigError, match="trust_remote_code"):
        OmniDiffusionModule.from_pretrained(folder)
    # even when the caller trusts the class paths, a file never switches trust on
    with pytest.raises(UntrustedConfigError, match="trust_remote_code"):
        OmniDiffusionModule.from_pretrained(folder, trust_class_paths=True)
    assert not marker.exists()


def test_an_auto_map_to_another_repository_is_not_followed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    remote = remote_code_folder(
        tmp_path, marker, {"AutoConfig": "attacker/repo--configuration_evil.EvilConfig"}
    )
    with pytest.raises(Exception, match=r"trust_remote_code|remote code|evil"):
        HFBackbone(str(remote))
    assert not marker.exists()


def test_a_class_path_outside_the_registry_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = tmp_path / "evil_module.py"
    payload.write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Net: pass\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        folder = saved_with(tmp_path, {"class_path": "evil_module.Net", "init_args": {}})
        with pytest.raises(UntrustedConfigError, match=re.escape("evil_module.Net")):
            OmniDiffusionModule.from_pretrained(folder)
        folder2 = saved_with(
            tmp_path / "b",
            {"class_path": "omni_blocks.Nothing", "init_args": {"f": "evil_module.Net"}},
        )
        with pytest.raises(UntrustedConfigError):
            OmniDiffusionModule.from_pretrained(folder2)
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists()


class _Payload:
    """Unpickling this writes the marker (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "ran"))


def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ckpt = tmp_path / "evil.ckpt"
    module = tiny_module()
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": module.to_config(),
            "x": _Payload(marker),
        },
        ckpt,
        pickle_protocol=pickle.DEFAULT_PROTOCOL,
    )
    with pytest.raises(ValueError, match="weights_only=True"):
        OmniDiffusionModule.load_from_checkpoint(ckpt)
    with pytest.raises(ValueError, match="weights_only=True"):
        tiny_module().load_weights(ckpt)
    assert not marker.exists()


def test_checkpoint_hyper_parameters_are_untrusted_too(tmp_path: Path) -> None:
    module = tiny_module()
    config = module.to_config()
    config["schedule"] = {"class_path": "os.system", "init_args": {}}
    ckpt = tmp_path / "x.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": config}, ckpt)
    with pytest.raises(UntrustedConfigError, match=re.escape("os.system")):
        OmniDiffusionModule.load_from_checkpoint(ckpt)


def test_url_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a URL"):
        OmniDiffusionModule.load_from_checkpoint("https://example.com/evil.ckpt")
    with pytest.raises(ValueError, match="is a URL"):
        tiny_module().load_weights("http://example.com/evil.ckpt")


def test_the_cli_refuses_a_url_checkpoint(tmp_path: Path) -> None:
    from tiny_data import tiny_layout

    layout = tiny_layout()
    config = {
        "model": {
            "backbone": {
                "class_path": "omni_blocks.backbones.NativeTransformer",
                "init_args": {
                    "vocab_size": layout.vocab_size,
                    "hidden_size": 16,
                    "intermediate_size": 32,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                },
            },
            "layout": layout.to_dict(),
        },
        "data": {"class_path": "tiny_data.CopyDataModule"},
        "trainer": {"max_steps": 1, "logger": False, "enable_checkpointing": False},
    }
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="is a URL"):
        cli(["fit", "--config", str(path), "--ckpt_path", "https://example.com/evil.ckpt"])
