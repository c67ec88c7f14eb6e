"""`OmniDiffusionModule.generate` and evaluation through it."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from omni_blocks.backbones import NativeTransformer
from omni_blocks.data import InpaintingTemplate, TextToImageTemplate
from omni_blocks.masking import AttenuatedTailPadMasking
from omni_blocks.metrics import (
    AnswerAccuracy,
    GenerationEval,
    JudgeScore,
    WordErrorRate,
    evaluate,
    normalize_text,
)
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.optim import AdamWConfig, WarmupCosine
from omni_blocks.sampling import (
    Denoiser,
    MaskedDiffusionSampler,
    SampleOutput,
    Sampler,
    SchedulePlanner,
)
from omni_blocks.typing import SeqMask, TokenIds
from omni_blocks.vocab import Modality, VocabLayout
from tiny_data import (
    IMAGE_TOKENS,
    digit_data,
    digit_examples,
    digit_layout,
    digit_templates,
    digit_tokenizer,
)


class GreedyOneShot(Sampler):
    """Fills every mask at once with the most likely allowed id (a one-step sampler).

    Records its calls, so the tests can check what `generate` passes in.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        model: Denoiser,
        ids: TokenIds,
        *,
        layout: VocabLayout,
        modality: Modality | None = None,
        target_mask: SeqMask | None = None,
        attention_mask: SeqMask | None = None,
        generator: torch.Generator | None = None,
    ) -> SampleOutput:
        self.calls.append(
            {
                "ids": ids.clone(),
                "modality": modality,
                "target": target_mask,
                "attention": attention_mask,
            }
        )
        logits = model(ids, attention_mask)
        if modality is not None:
            allowed = layout.logit_mask(modality, vocab_size=logits.shape[-1])
            logits = logits.masked_fill(~allowed, float("-inf"))
        masked = ids == layout.mask_id
        filled = torch.where(masked, logits.argmax(-1), ids)
        return SampleOutput(ids=filled, nfe=1)


@pytest.fixture(scope="module")
def setup() -> tuple[OmniDiffusionModule, dict[str, Any], list[dict[str, Any]]]:
    tok = digit_tokenizer()
    layout = digit_layout(tok)
    torch.manual_seed(0)
    backbone = NativeTransformer(
        vocab_size=layout.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    module = OmniDiffusionModule(backbone, layout, sampler=GreedyOneShot())
    return module, digit_templates(layout, tok), digit_examples()


def test_generate_fills_only_the_target_with_the_target_modality(setup: Any) -> None:
    module, templates, examples = setup
    sampler: GreedyOneShot = module.sampler
    sampler.calls.clear()
    texts = module.generate(templates["asr"], examples[:3], target_length=6)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    (call,) = sampler.calls
    assert call["modality"] is Modality.TEXT
    ids, target = call["ids"], call["target"]
    # the target region is exactly the masked positions, 6 per row
    assert torch.equal(ids == module.layout.mask_id, target)
    assert target.sum(dim=1).tolist() == [6, 6, 6]
    # prompts are the template's prompts, at the start of each row
    for row, example in enumerate(examples[:3]):
        prompt = templates["asr"].prompt(example, 6).ids
        assert torch.equal(ids[row, : len(prompt)], prompt)


def test_generated_images_are_local_codes(setup: Any) -> None:
    module, templates, examples = setup
    layout = module.layout
    t2i = TextToImageTemplate(layout, templates["asr"].tokenizer, image_tokens=IMAGE_TOKENS)
    images = module.generate(t2i, examples[:2])  # image targets default to image_tokens + 1
    for codes in images:
        assert codes.dtype == torch.long and codes.dim() == 1
        assert bool((codes >= 0).all()) and bool((codes < layout.image_size).all())


def test_inpainting_keeps_the_known_codes(setup: Any) -> None:
    module, templates, examples = setup
    template = InpaintingTemplate(
        module.layout, templates["asr"].tokenizer, image_tokens=IMAGE_TOKENS
    )
    known = torch.tensor([True, False, False, True])
    example = {**examples[3], "known_mask": known}
    module.sampler.calls.clear()
    (codes,) = module.generate(template, [example])
    given = example["image_codes"]
    if len(codes) == IMAGE_TOKENS:  # parse cuts at an early end token
        assert torch.equal(codes[known], given[known])
    sent = module.sampler.calls[0]["ids"][0]
    target = module.sampler.calls[0]["target"][0]
    # known codes are in the target region but not masked: the sampler leaves them
    assert int((sent[target] != module.layout.mask_id).sum()) >= int(known.sum())


def test_batching_does_not_change_outputs(setup: Any) -> None:
    module, templates, examples = setup
    together = module.generate(templates["caption"], examples[:4], target_length=7)
    alone = [module.generate(templates["caption"], [e], target_length=7)[0] for e in examples[:4]]
    one_by_one = module.generate(templates["caption"], examples[:4], target_length=7, batch_size=1)
    assert together == alone == one_by_one


def test_generate_restores_the_training_mode(setup: Any) -> None:
    module, templates, examples = setup
    module.train()
    module.generate(templates["asr"], examples[:1], target_length=4)
    assert module.training
    module.eval()
    module.generate(templates["asr"], examples[:1], target_length=4)
    assert not module.training


def test_generate_errors_are_clear(setup: Any) -> None:
    module, templates, examples = setup
    no_sampler = OmniDiffusionModule(module.backbone, module.layout)
    with pytest.raises(ValueError, match="no sampler"):
        no_sampler.generate(templates["asr"], examples[:1], target_length=4)
    other = VocabLayout(text_size=module.layout.text_size, speech_size=16, image_size=16)
    foreign = type(templates["asr"])(other, templates["asr"].tokenizer)
    with pytest.raises(ValueError, match="layout"):
        module.generate(foreign, examples[:1], target_length=4)
    with pytest.raises(ValueError, match="target_length"):
        module.generate(templates["asr"], examples[:1])


def test_evaluate_scores_generated_text(setup: Any) -> None:
    module, templates, examples = setup
    outputs = module.generate(templates["caption"], examples, target_length=7)
    pairs = zip(outputs, examples, strict=True)
    expected = sum(normalize_text(o) == e["caption"] for o, e in pairs)
    score = evaluate(module, templates["caption"], examples, AnswerAccuracy(), target_length=7)
    assert score == pytest.approx(expected / len(examples))

    class Length:
        def score(self, outs: Any, exs: Any) -> torch.Tensor:
            return torch.tensor([float(len(o)) for o in outs])

    t2i = TextToImageTemplate(module.layout, templates["asr"].tokenizer, image_tokens=4)
    images = module.generate(t2i, examples[:3])
    mean = sum(len(c) for c in images) / 3
    assert evaluate(module, t2i, examples[:3], JudgeScore(Length())) == pytest.approx(mean)


def test_generation_eval_logs_the_score_after_validation(tmp_path: Any) -> None:

    tok = digit_tokenizer()
    layout = digit_layout(tok)
    templates = digit_templates(layout, tok)
    examples = digit_examples()
    torch.manual_seed(0)
    module = OmniDiffusionModule(
        NativeTransformer(
            vocab_size=layout.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        layout,
        sampler=GreedyOneShot(),
    )
    callback = GenerationEval(templates["asr"], examples, target_length=4, seed=3)
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[callback],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, digit_data(batch_size=10))  # 2 batches per epoch: 2 validations
    logged = float(trainer.callback_metrics["val/asr/worderrorrate"])
    again = evaluate(
        module,
        templates["asr"],
        examples,
        target_length=4,
        generator=torch.Generator().manual_seed(3),
    )
    assert logged == pytest.approx(again)


@pytest.mark.slow
def test_training_then_generation_learns_the_digits(tmp_path: Any) -> None:
    """End to end: fit on captioning + ASR, then generate with the real sampler and score."""
    tok = digit_tokenizer()
    layout = digit_layout(tok)
    templates = digit_templates(layout, tok)
    examples = digit_examples()
    torch.manual_seed(0)
    module = OmniDiffusionModule(
        NativeTransformer(
            vocab_size=layout.vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        layout,
        sampler=MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=7)),
        mask_strategy=AttenuatedTailPadMasking(),
        optimizer=AdamWConfig(lr=3e-3),
        lr_schedule=WarmupCosine(warmup_steps=10),
    )

    def scores() -> tuple[float, float]:
        accuracy = evaluate(module, templates["caption"], examples, target_length=7)
        wer = evaluate(module, templates["asr"], examples, WordErrorRate(), target_length=4)
        return accuracy, wer

    before = scores()
    trainer = L.Trainer(
        max_steps=600,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, digit_data(batch_size=10))
    accuracy, wer = scores()
    assert before[0] == 0.0 and before[1] >= 0.9  # untrained: nothing right
    assert accuracy >= 0.6, accuracy  # captions of the ten digit images
    assert wer <= 0.3, wer  # transcripts of the ten spoken digits
