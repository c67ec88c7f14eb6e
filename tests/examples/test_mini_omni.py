"""The offline miniature recipe (examples/mini_omni) at its tiny size, and its baseline blocks."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

from mini_omni.autoregressive import greedy_decode, next_token_loss  # noqa: E402
from mini_omni.speech_synth import espeak_available  # noqa: E402

from omni_blocks.backbones import NativeTransformer  # noqa: E402
from omni_blocks.vocab import Modality, VocabLayout  # noqa: E402

LAYOUT = VocabLayout(
    text_size=20, speech_size=6, image_size=8, special_ids={"mask": 2, "pad": 0, "eos": 0}
)


def causal_net(seed: int = 0) -> NativeTransformer:
    torch.manual_seed(seed)
    return NativeTransformer(
        vocab_size=LAYOUT.vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        causal=True,
        shift_logits=True,
    ).eval()


def test_greedy_decode_does_not_depend_on_batch_padding() -> None:
    net = causal_net()
    prompts = [torch.tensor([1, 5, 7, 9]), torch.tensor([3, 4])]
    both = greedy_decode(net, prompts, layout=LAYOUT, modality=Modality.IMAGE, max_new_tokens=5)
    for row, prompt in enumerate(prompts):
        alone = greedy_decode(
            net, [prompt], layout=LAYOUT, modality=Modality.IMAGE, max_new_tokens=5
        )
        ended = alone.ids[0]
        assert torch.equal(both.ids[row], ended)
        assert int(both.nfe[row]) == int(alone.nfe[0])
    # only image ids, the image's end token and pad are ever written
    allowed = LAYOUT.logit_mask(Modality.IMAGE)
    assert bool(allowed[both.ids].all())


class Scripted(NativeTransformer):
    """Writes image code 3 for `length` tokens, then the image's end token; counts calls."""

    def __init__(self, length: int) -> None:
        super().__init__(LAYOUT.vocab_size, 8, 16, 1, 2, causal=True, shift_logits=True)
        self.length = length
        self.calls = 0

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls += 1
        logits = torch.zeros(*input_ids.shape, LAYOUT.vocab_size)
        written = self.calls - 1
        best = (
            LAYOUT.end_id(Modality.IMAGE)
            if written >= self.length
            else LAYOUT.offset(Modality.IMAGE) + 3
        )
        logits[:, -1, best] = 10.0
        logits[:, -1, 5] = 20.0  # a text id: never allowed when generating an image
        return logits


@pytest.mark.parametrize("length", [0, 2, 9])
def test_greedy_decode_counts_one_forward_pass_per_token(length: int) -> None:
    net = Scripted(length)
    out = greedy_decode(
        net, [torch.tensor([1, 5])], layout=LAYOUT, modality=Modality.IMAGE, max_new_tokens=6
    )
    image_3 = LAYOUT.offset(Modality.IMAGE) + 3
    written = min(length, 6)
    assert net.calls == int(out.nfe[0]) == min(length + 1, 6)
    expected = [image_3] * written + [LAYOUT.end_id(Modality.IMAGE)] * (written < 6)
    expected += [LAYOUT.pad_id] * (6 - len(expected))
    assert out.ids[0].tolist() == expected


def test_greedy_decode_needs_a_causal_backbone() -> None:
    net = causal_net()
    net.causal = False
    with pytest.raises(ValueError, match="causal"):
        greedy_decode(
            net, [torch.tensor([1])], layout=LAYOUT, modality=Modality.TEXT, max_new_tokens=2
        )


def test_next_token_loss_covers_only_the_target() -> None:
    logits = torch.randn(1, 4, LAYOUT.vocab_size)
    ids = torch.tensor([[1, 5, 7, 0]])
    target_mask = torch.tensor([[False, False, True, True]])
    changed = logits.clone()
    changed[0, :2] += 5.0  # prompt positions do not count
    assert torch.equal(
        next_token_loss(logits, ids, target_mask), next_token_loss(changed, ids, target_mask)
    )


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_tiny_run_produces_every_output_and_metric(tmp_path: Path) -> None:
    from mini_omni.run import main
    from mini_omni.tasks import TASKS

    out = tmp_path / "out"
    report = main(
        [
            "--preset",
            "tiny",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["preset"] == "tiny"
    diffusion, autoregressive = saved["results"]["diffusion"], saved["results"]["autoregressive"]
    assert set(diffusion) == {*TASKS, "inpainting, no prompt"}
    assert set(autoregressive) == set(TASKS) - {"inpainting"}
    for results in (diffusion, autoregressive):
        for task, r in results.items():
            assert r["n"] > 0, task
            assert math.isfinite(r["value"]) and r["value"] >= 0, task
            assert r["nfe"] >= 1, task
    for judge, accuracy in saved["judges"].items():
        assert 0 <= accuracy <= 1, judge
    for pair in saved["agreement"].values():
        assert set(pair) == {"same digit", "same codes"}
    for task, rows in saved["sweep"].items():
        models = {row["model"] for row in rows}
        assert models == {"diffusion", "autoregressive"}, task
    for name in saved["files"]:
        assert (out / name).is_file(), name
    assert (out / "images.png").stat().st_size > 1000
    assert any(name.endswith(".wav") for name in saved["files"])
    text = (out / "report.md").read_text()
    assert "| task | metric | diffusion |" in text
    assert report["results"] == saved["results"]
    for task, r in diffusion.items():  # every figure has its 95% interval
        low, high = r["interval"]
        assert low <= r["value"] + 1e-9 and r["value"] <= high + 1e-9, task
    assert set(saved["sensitivity"]) == set(TASKS) - {"inpainting"}
    for task, kl in saved["sensitivity"].items():
        assert kl["diffusion"] >= 0 and kl["autoregressive"] >= 0, task

    # the same run hearing speech through an encoder, compared with the codes' results
    from mini_omni.speech_input import HEARD
    from mini_omni.speech_input import main as speech_input

    common = ["--preset", "tiny", "--workdir", str(tmp_path / "work"), "--threads", "1",
              "--no-progress"]  # fmt: skip
    compared = speech_input(
        ["--codes", str(out / "results.json"), "--out", str(tmp_path / "heard"), *common]
    )
    assert set(compared["tasks"]) == set(HEARD)
    for task, row in compared["tasks"].items():
        assert row["codes"]["mean"] == diffusion[task]["value"], task
        assert math.isfinite(row["features"]["mean"]), task
    assert "| asr |" in (tmp_path / "heard" / "speech_input.md").read_text()


def test_budget_scores_the_baseline_at_fractions_of_its_steps(tmp_path: Path) -> None:
    from mini_omni.budget import main as budget

    out = budget(
        ["--steps", "2", "4", "--preset", "tiny", "--workdir", str(tmp_path / "work"),
         "--out", str(tmp_path / "budget"), "--threads", "1", "--no-progress"]
    )  # fmt: skip
    assert out["full"] == 12 and {"2", "4"} <= set(out)
    for steps in ("2", "4"):
        for task, ci in out[steps].items():
            assert ci["low"] <= ci["mean"] + 1e-9 <= ci["high"] + 2e-9, (steps, task)
    assert "| 2 (0.17x) |" in (tmp_path / "budget" / "budget.md").read_text()
