"""Text metrics, the Judge hook and their task defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch

from omni_blocks.data import AsrTemplate, CaptionTemplate, TextToImageTemplate, VqaTemplate
from omni_blocks.metrics import (
    AnswerAccuracy,
    CharErrorRate,
    GenerationEval,
    Judge,
    JudgeScore,
    WordErrorRate,
    default_metric,
    normalize_text,
    reference_key,
)
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.vocab import VocabLayout


def test_normalize_text() -> None:
    assert normalize_text("  The CAT's hat, (really)!  ") == "the cat's hat really"
    assert normalize_text("'quoted'") == "quoted"
    assert normalize_text("ＡＢＣ") == "abc"  # NFKC


def test_word_and_char_error_rates() -> None:
    wer = WordErrorRate()
    wer.update(["THE CAT SAT", "hello world"], ["the cat sat on the mat", "hello, world!"])
    assert float(wer.compute()) == pytest.approx(3 / 8)
    raw = WordErrorRate(normalize=False)
    raw.update(["hello, world!"], ["hello world"])
    assert float(raw.compute()) == pytest.approx(1.0)
    cer = CharErrorRate()
    cer.update("Seven.", "seven")
    assert float(cer.compute()) == 0.0
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        wer.update(["a", "b"], ["a"])
    with pytest.raises(TypeError, match=r"parse outputs to text|preds"):
        wer.update([torch.tensor([1])], ["a"])  # type: ignore[list-item]


def test_answer_accuracy_exact_and_contains() -> None:
    exact = AnswerAccuracy()
    assert torch.isnan(exact.compute())
    exact.update(["Three.", "it is three", "seven"], ["three", "three", "three"])
    assert float(exact.compute()) == pytest.approx(1 / 3)
    lenient = AnswerAccuracy(contains=True)
    lenient.update(["Three.", "it is three", "threefold"], ["three", "three", "three"])
    assert float(lenient.compute()) == pytest.approx(2 / 3)


class CodesMatch:
    """Scores generated image codes by the fraction equal to the example's codes."""

    def score(self, outputs: Sequence[Any], examples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        pairs = zip(outputs, examples, strict=True)
        return torch.tensor([float((o == e["image_codes"]).float().mean()) for o, e in pairs])


def test_judge_score_averages_a_judge() -> None:
    judge = CodesMatch()
    assert isinstance(judge, Judge)
    metric = JudgeScore(judge)
    examples = [{"image_codes": torch.tensor([1, 2, 3, 4])}] * 2
    metric.update([torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0])], examples)
    assert float(metric.compute()) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="1 outputs but 2 examples"):
        metric.update([torch.tensor([1])], examples)

    class Scalar:
        def score(self, outputs: Sequence[Any], examples: Sequence[Mapping[str, Any]]) -> Any:
            return torch.tensor(1.0)

    with pytest.raises(ValueError, match="one score per output"):
        JudgeScore(Scalar()).update([torch.tensor([1])], examples[:1])
    with pytest.raises(TypeError, match="Judge"):
        JudgeScore(object())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train_bpe(["a digit three", "what digit"] * 10, vocab_size=280)


@pytest.fixture(scope="module")
def layout(tok: TextTokenizer) -> VocabLayout:
    eos = tok.token_id("<|endoftext|>")
    return VocabLayout(
        text_size=tok.codebook_size,
        speech_size=8,
        image_size=8,
        special_ids={"mask": tok.token_id("<|mask|>"), "pad": eos, "eos": eos},
    )


def test_task_defaults(tok: TextTokenizer, layout: VocabLayout) -> None:
    assert isinstance(default_metric(AsrTemplate(layout, tok)), WordErrorRate)
    assert isinstance(default_metric(CaptionTemplate(layout, tok, image_tokens=2)), AnswerAccuracy)
    assert reference_key(VqaTemplate(layout, tok, image_tokens=2)) == "answer"
    t2i = TextToImageTemplate(layout, tok, image_tokens=2)
    assert reference_key(t2i) is None
    with pytest.raises(ValueError, match="JudgeScore"):
        default_metric(t2i)
    callback = GenerationEval(AsrTemplate(layout, tok), [{"speech_codes": torch.tensor([1])}])
    assert callback.key == "val/asr/worderrorrate"
    with pytest.raises(ValueError, match="every_n_epochs"):
        GenerationEval(AsrTemplate(layout, tok), [], every_n_epochs=0)


def test_bootstrap_interval_covers_the_mean_and_is_seeded() -> None:
    from omni_blocks.metrics import bootstrap_interval

    scores = torch.rand(200, generator=torch.Generator().manual_seed(0))
    interval = bootstrap_interval(scores)
    assert interval.low < float(scores.mean()) < interval.high and interval.n == 200
    # about the normal approximation's width: 2 * 1.96 * sd / sqrt(n)
    width = 2 * 1.96 * float(scores.std()) / 200**0.5
    assert abs((interval.high - interval.low) - width) < 0.2 * width
    assert bootstrap_interval(scores) == interval  # the same seed, the same interval
    assert str(bootstrap_interval([1.0, 1.0])) == "1.000 [1.000, 1.000]"
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([0.0, 1.0], confidence=1.5)
