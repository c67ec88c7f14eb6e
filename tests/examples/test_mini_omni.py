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
    # learning curves of both models: losses every 4 steps from 0 to 12 (across the diffusion
    # model's three 4-step stages), quality at half and all of the 12-step budget
    shared = set(TASKS) - {"inpainting"}
    for model in ("diffusion", "autoregressive"):
        curves = saved["curves"][model]
        assert set(curves["loss"]) == set(curves["quality"]) == shared, model
        for task, points in curves["loss"].items():
            assert [step for step, _ in points] == [0, 4, 8, 12], (model, task)
            assert all(math.isfinite(v) and v > 0 for _, v in points), (model, task)
        for task, points in curves["quality"].items():
            assert [step for step, _ in points] == [6, 12], (model, task)
    assert saved["curves"]["diffusion"]["stage_ends"] == [4, 8, 12]
    # the verdict: parity per shared task, forward passes on t2i / s2i / TTS, and three goals
    assert len(saved["verdict"]) == len(shared) + 3 + 3
    assert {row["met"] for row in saved["verdict"]} <= {"yes", "no", "not shown"}
    assert "## Learning curves" in text
    assert (out / "training_loss.png").stat().st_size > 10_000

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


def test_budget_scores_both_models_at_several_budgets(tmp_path: Path) -> None:
    from mini_omni.budget import main as budget
    from mini_omni.run import SHARED_TASKS

    out = budget(
        ["--baseline-steps", "2", "12", "--diffusion-multiples", "1", "2", "--preset", "tiny",
         "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "budget"),
         "--threads", "1", "--no-progress"]
    )  # fmt: skip
    assert [p["steps"] for p in out["autoregressive"]] == [2, 12]
    assert [p["steps"] for p in out["diffusion"]] == [12, 24]  # tiny: 4 + 4 + 4 per stage
    for model in ("autoregressive", "diffusion"):
        for point in out[model]:
            assert set(point["scores"]) == set(SHARED_TASKS)
            for task, ci in point["scores"].items():
                assert ci["low"] <= ci["mean"] + 1e-9 <= ci["high"] + 2e-9, (model, task)
    assert set(out["parity"]) == set(SHARED_TASKS)
    assert all("x" in verdict for verdict in out["parity"].values())
    text = (tmp_path / "budget" / "budget.md").read_text()
    assert "| autoregressive | 2 (0.166667x) |" in text
    assert "| diffusion | 24 (2x) |" in text
    assert (tmp_path / "budget" / "budget.png").stat().st_size > 10_000


def test_parity_verdict_reads_the_curves() -> None:
    from mini_omni.budget import crossing

    def point(steps: int, caption: float, asr: float) -> dict:
        ci = lambda v: {"mean": v, "low": v, "high": v, "n": 10}
        return {"steps": steps, "scores": {"caption": ci(caption), "asr": ci(asr)}}

    points = {
        "autoregressive": [point(100, 0.5, 0.3), point(200, 0.9, 0.1)],
        "diffusion": [point(200, 0.6, 0.2), point(400, 0.92, 0.15), point(800, 0.95, 0.12)],
    }
    assert crossing(points, "caption") == "2x"  # 400 steps reach 0.9
    assert crossing(points, "asr") == "> 4x (gap +0.020)"  # WER: lower is better, never 0.1


def test_learning_curves_leave_the_training_unchanged(tmp_path: Path) -> None:
    """Measuring while training neither draws from torch's generator nor changes a weight."""
    from mini_omni.curves import Curves
    from mini_omni.presets import PRESETS
    from mini_omni.run import Run, parse_args, prepare_data, train_baseline, train_diffusion

    args = parse_args(["--preset", "tiny", "--workdir", str(tmp_path), "--no-progress",
                       "--threads", "1"])  # fmt: skip
    torch.set_num_threads(1)
    data = prepare_data(Run(args=args, preset=PRESETS["tiny"]))
    weights = []
    for curves in (None, Curves()):
        torch.manual_seed(0)
        run = Run(args=args, preset=PRESETS["tiny"])
        module, _ = train_diffusion(run, data, curves=curves)
        ar, _ = train_baseline(run, data, curves=curves)
        weights.append([p.detach().clone() for p in [*module.parameters(), *ar.parameters()]])
        if curves is not None:
            assert curves.loss and curves.quality
    for a, b in zip(weights[0], weights[1], strict=True):
        assert torch.equal(a, b)


def test_prompt_dropout_run_guides_speech_to_image(tmp_path: Path) -> None:
    """`--prompt-dropout`: the image tasks train with dropped prompts, speech-to-image is
    sampled with guidance (two forward passes a step), and the report sweeps the scale."""
    from mini_omni.run import GUIDANCE_SWEEP, main

    out = tmp_path / "out"
    report = main(
        ["--preset", "tiny", "--workdir", str(tmp_path / "work"), "--out", str(out),
         "--threads", "1", "--no-progress", "--prompt-dropout", "0.5"]
    )  # fmt: skip
    diffusion = report["results"]["diffusion"]
    assert diffusion["s2i"]["nfe"] == 2 * diffusion["t2i"]["nfe"]  # guided: two passes a step
    rows = report["guidance"]
    assert [row["scale"] for row in rows] == list(GUIDANCE_SWEEP)
    for row in rows:
        passes = 1 if row["scale"] == 0 else 2
        assert row["s2i nfe"] == passes * rows[0]["s2i nfe"], row
    assert (
        "Prompt dropout (0.5 of the image tasks' training rows)" in (out / "report.md").read_text()
    )


def test_paired_difference_resamples_both_models_together() -> None:
    from mini_omni.evaluation import TaskResult
    from mini_omni.stats import paired_difference

    def result(scores: list[float], weights: list[float] | None = None) -> TaskResult:
        value = sum(scores) / (sum(weights) if weights else len(scores))
        return TaskResult("t", "m", value, len(scores), 1.0, 0.0, scores=scores,
                          weights=weights or [])  # fmt: skip

    same = paired_difference(result([1, 0, 1, 1]), result([1, 0, 1, 1]))
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: no spread at all
    worse = paired_difference(result([0] * 50 + [1] * 50), result([1] * 100))
    assert worse.mean == -0.5 and worse.high < 0
    wer = paired_difference(result([2, 1], [4, 4]), result([1, 1], [4, 4]))
    assert wer.mean == 0.125 and wer.low >= 0.0
    with pytest.raises(ValueError, match="same examples"):
        paired_difference(result([1, 0]), result([1]))
