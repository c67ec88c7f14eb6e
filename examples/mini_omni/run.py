"""The offline miniature of Omni-Diffusion, end to end, on two CPU cores.

    python examples/mini_omni/run.py                      # the default preset, <= 12 minutes
    python examples/mini_omni/run.py --preset full-mini   # longer, better numbers
    python examples/mini_omni/run.py --preset tiny        # a smoke run (the test uses it)
    python examples/mini_omni/run.py --seeds 3            # three seeds, mean and spread

What it does, in order (each phase is a function below; `main` calls them in turn):

1. corpus: real handwritten digits (`sklearn.datasets.load_digits`) and real synthesised
   speech (espeak-ng: digit words, "draw a seven", three questions; training voices for
   train, held-out voices for test), cached in `--workdir`;
2. tokenizers: a patch VQ for images (16 tokens per digit), a mel VQ for speech (12.5 Hz),
   a small BPE for text, joined in one `VocabLayout`;
3. judges, fitted on real data only: a digit classifier (pixels) and a spoken-word
   classifier (log-mel features); they score generated images and speech;
4. the diffusion model, trained in the paper's three stages, each initialised from the
   previous one, with upstream's per-token masking (a time per token, end tokens
   attenuated by 0.6): (1) text-to-image, captioning, VQA;
   (2) + ASR, TTS; (3) + speech-to-image, spoken VQA;
5. the autoregressive baseline: the same backbone with causal attention, trained on the
   final stage's mixture for as many steps as the diffusion model had in total;
6. evaluation of every task with 95% bootstrap intervals (plus zero-shot inpainting, the
   agreement between images drawn from a text prompt and from its spoken version, and how
   much each model's predictions move when the prompt is swapped), and a sweep of
   sampling steps against the baseline: quality against forward passes (NFE);
   Both models' learning curves (per-task loss on a training probe, held-out quality at
   fractions of the budget) are measured while they train, without changing the training;
7. `report.md` (with a verdict per goal of issue 21), `images.png`, `quality_vs_nfe.png`,
   `training_loss.png`, `quality_vs_steps.png`, `wavs/*.wav` and `results.json` in `--out`.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait are the fastest on an idle machine (1.75x faster
# steps than passive waiting here) but starve each other when other work shares the cores (a
# step then takes seconds instead of a tenth of one): wait passively only on a busy machine.
# This must be set before torch loads OpenMP; an OMP_WAIT_POLICY already set wins.
if os.getloadavg()[0] >= (os.cpu_count() or 1):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the `mini_omni` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.auto import tqdm

from mini_omni.autoregressive import AutoregressiveModule, greedy_decode, next_token_loss
from mini_omni.corpus import Corpus, load_or_build_corpus
from mini_omni.curves import Curves, LearningCurves
from mini_omni.evaluation import (
    Example,
    GenerateFn,
    Generation,
    TaskResult,
    score_task,
    t2i_s2i_agreement,
)
from mini_omni.judges import DigitJudge, SpokenWordJudge
from mini_omni.presets import PRESETS, Preset
from mini_omni.reporting import Evaluation, write_report
from mini_omni.tasks import (
    INSTRUCTIONS,
    TASKS,
    TaskData,
    balanced_subset,
    build_task_data,
    make_templates,
)
from mini_omni.tokenizing import Tokenizers, build_tokenizers
from omni_blocks.backbones import NativeTransformer
from omni_blocks.data import (
    OmniDataModule,
    PromptDropout,
    SequenceCollator,
    TaskBatch,
    TaskMixture,
    TaskTemplate,
    TemplateDataset,
)
from omni_blocks.generation import generate
from omni_blocks.masking import PerTokenTimeMasking
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.optim import AdamWConfig, WarmupCosine
from omni_blocks.sampling import (
    MaskedDiffusionSampler,
    PromptSwapGuidance,
    Sampler,
    fast_dllm_sampler,
    omni_diffusion_sampler,
)
from omni_blocks.schedules import AntitheticTime, LinearSchedule
from omni_blocks.speech import Projector, SpeechEncoder


@dataclass(frozen=True)
class Stage:
    """One training stage: its name, task mixture (task -> share of the batches) and peak
    learning rate as a fraction of the preset's."""

    name: str
    mixture: dict[str, float]
    lr_scale: float = 1.0


# Generation (t2i, tts) is learnt fast here; understanding (reading a digit from 16 image
# codes or from speech) is slow, so the mixtures lean towards it. The last stage keeps a
# fair share of the earlier tasks and a lower peak learning rate: with the new tasks at half
# the batches and the full rate, it undid much of what stage 1 had learnt (caption accuracy
# fell from about 0.6 to 0.2 in a run of the default preset).
STAGES = (
    Stage("1 vision-language", {"t2i": 0.3, "caption": 0.35, "vqa": 0.35}),
    Stage(
        "2 + speech",
        {"t2i": 0.1, "caption": 0.15, "vqa": 0.2, "asr": 0.3, "tts": 0.25},
    ),
    Stage(
        "3 speech-driven vision",
        {
            "t2i": 0.1,
            "caption": 0.12,
            "vqa": 0.12,
            "asr": 0.12,
            "tts": 0.09,
            "s2i": 0.25,
            "spoken_vqa": 0.2,
        },
        lr_scale=0.75,
    ),
)
SWEEP_TASKS = ("t2i", "s2i", "caption", "asr", "tts")
#: Tasks both models do (inpainting is the diffusion model's alone).
SHARED_TASKS = tuple(t for t in TASKS if t != "inpainting")
#: With `--prompt-dropout P` (off by default): classifier-free guidance at sampling, task ->
#: scale (Omni-Diffusion's `cfg` for speech-to-image in `tools/inference.py`; its other
#: tasks use none), fixed in advance, not tuned on held-out data; the report then sweeps
#: other scales as a diagnostic. Without dropout the unconditional prompt was never trained
#: on, and the recipe does not guide.
GUIDANCE = {"s2i": 2.0}
#: The tasks whose training rows `--prompt-dropout` drops (an empty user turn instead of
#: the prompt), so that guidance subtracts a trained unconditional model (upstream trains
#: none). The two image tasks share one unconditional prompt.
DROPOUT_TASKS = ("t2i", "s2i")
GUIDANCE_SWEEP = (0.0, 1.0, 2.0, 4.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mini")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(".cache/mini_omni"),
        help="cache of the corpus and tokenizers",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/mini_omni"), help="where the report goes"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run seeds seed..seed+N-1, each in OUT/seed_K, and write their mean and spread "
        "to OUT/seeds.md and OUT/seeds.json",
    )
    parser.add_argument(
        "--prompt-dropout",
        type=float,
        default=0.0,
        help="drop the prompts of this share of the diffusion model's image-task rows in "
        "training and guide speech-to-image at upstream's scale 2.0 (a lever, off by default)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


@dataclass
class Run:
    """What every phase of a run shares: its settings and its clock."""

    args: argparse.Namespace
    preset: Preset
    started: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)
    load_at_start: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def progress(self) -> bool:
        return not self.args.no_progress

    @property
    def seed(self) -> int:
        return int(self.args.seed)

    @property
    def guided(self) -> bool:
        """Prompt dropout in training and guidance at sampling (`--prompt-dropout`)."""
        return float(getattr(self.args, "prompt_dropout", 0.0)) > 0

    def lap(self, name: str, since: float) -> float:
        """Record the seconds since `since` under `name`, print them, return now."""
        self.timings[name] = time.time() - since
        print(f"[{time.time() - self.started:6.1f}s] {name}: {self.timings[name]:.1f}s", flush=True)
        return time.time()


@dataclass
class Data:
    """The corpus, its tokenizers, the judges and the task data of a run (phases 1 to 3)."""

    corpus: Corpus
    tokenizers: Tokenizers
    digit_judge: DigitJudge
    word_judge: SpokenWordJudge
    judges: dict[str, float]
    tasks: TaskData
    templates: dict[str, TaskTemplate]

    def score(self, task: str, examples: list[Example], generation: Generation) -> TaskResult:
        """`score_task` with this run's tokenizers and judges."""
        return score_task(
            task,
            examples,
            generation,
            tokenizers=self.tokenizers,
            digit_judge=self.digit_judge,
            word_judge=self.word_judge,
        )


def backbone(tokenizers: Tokenizers, preset: Preset, *, causal: bool = False) -> NativeTransformer:
    """The Qwen2/Dream-layout transformer; `causal=True` is the autoregressive baseline."""
    return NativeTransformer(
        vocab_size=tokenizers.layout.vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=3 * preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        max_position_embeddings=128,
        causal=causal,
        shift_logits=causal,  # position i predicts token i from tokens < i
    )


# ---------------------------------------------------------------------- 1-3. data and judges


def prepare_data(run: Run) -> Data:
    """The corpus, the tokenizers and the judges (fitted on real data only)."""
    t = time.time()
    corpus = load_or_build_corpus(run.args.workdir, progress=run.progress)
    t = run.lap("corpus", t)
    extra = list(INSTRUCTIONS.values())
    tokenizers = build_tokenizers(corpus, run.args.workdir, extra_texts=extra)
    t = run.lap("tokenizers", t)
    digit_judge = DigitJudge.fit(*corpus.images("train"))
    words = corpus.speech("train", "word")
    word_judge = SpokenWordJudge.fit([u.waveform for u in words], [u.digit for u in words])
    test_images, test_labels = corpus.images("test")
    test_words = corpus.speech("test", "word")
    test_digits = [int(u.digit) for u in test_words if u.digit is not None]
    round_trip = tokenizers.speech.decode(
        tokenizers.encode_speech([u.waveform for u in test_words])
    )
    judges = {
        "digit judge, real test images": digit_judge.accuracy(test_images, test_labels),
        "digit judge, test images through the image tokenizer": digit_judge.accuracy(
            tokenizers.image.decode(tokenizers.encode_images(test_images)), test_labels
        ),
        "speech judge, held-out voices": word_judge.accuracy(
            [u.waveform for u in test_words], test_digits
        ),
        "speech judge, held-out voices through the speech tokenizer": word_judge.accuracy(
            list(round_trip), test_digits
        ),
    }
    run.lap("judges", t)
    tasks = build_task_data(corpus, tokenizers, pairings=run.preset.pairings, seed=run.seed)
    templates = make_templates(tokenizers)
    return Data(corpus, tokenizers, digit_judge, word_judge, judges, tasks, templates)


# ---------------------------------------------------------------------- 4-5. training


# Upstream appends U{1..16} pad targets to every response and aligns rows with padding that
# is neither attended nor a target; our responses are 1 to 16 tokens.
TAIL_PAD = {"extra_tail_pad": (1, 8), "pad_targets": False}


def fit(
    run: Run,
    data: Data,
    model: L.LightningModule,
    mixture: dict[str, float],
    steps: int,
    callbacks: list[L.Callback] | None = None,
    prompt_dropout: tuple[tuple[str, ...], float] | None = None,
) -> dict[str, Any]:
    """Train `model` for `steps` optimiser steps on a task mixture; returns a log line.
    `prompt_dropout`: (tasks, rate) whose rows lose their prompt (see `PROMPT_DROPOUT`)."""
    preset = run.preset
    datasets = {t: TemplateDataset(data.tasks.train[t], data.templates[t]) for t in mixture}
    train = TaskMixture(datasets, mixture, num_samples=steps * preset.batch_size, seed=run.seed)
    dropout = None
    if prompt_dropout is not None:
        tasks, rate = prompt_dropout
        guided = {t: data.templates[t] for t in tasks if t in mixture}
        dropout = PromptDropout.from_templates(guided, rate) if guided else None
    datamodule = OmniDataModule(
        data.tokenizers.layout,
        train,
        batch_size=preset.batch_size,
        seed=run.seed,
        prompt_dropout=dropout,
        **TAIL_PAD,  # type: ignore[arg-type]
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=1,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=run.progress,
        callbacks=([TQDMProgressBar()] if run.progress else []) + list(callbacks or []),
        num_sanity_val_steps=0,
    )
    start = time.time()
    trainer.fit(model, datamodule=datamodule)
    loss = trainer.callback_metrics.get("train/loss")
    return {
        "steps": steps,
        "seconds": time.time() - start,
        "final loss": float(loss) if loss is not None else float("nan"),
    }


def sampler(num_steps: int) -> MaskedDiffusionSampler:
    """Omni-Diffusion's sampler, restricted to each task's modality and never writing [MASK]
    (upstream restricts neither; these small models would otherwise write stray ids)."""
    return omni_diffusion_sampler(num_steps, restrict_to_modality=True, ban_mask=True)


def task_samplers(data: Data, num_steps: int, guide: bool = False) -> dict[str, Sampler]:
    """The sampler of each task with `num_steps` steps: `sampler`, and with `guide`
    classifier-free guidance on the tasks of `GUIDANCE`. The unconditional pass reads the
    template's unconditional prompt right before the response, as prompt dropout trained it
    (two forward passes per step)."""
    base = sampler(num_steps)
    scales = GUIDANCE if guide else {}
    return {task: guided(base, data, task, scales.get(task, 0.0)) for task in TASKS}


def guided(base: MaskedDiffusionSampler, data: Data, task: str, scale: float) -> Sampler:
    """`base` with classifier-free guidance at `scale` on `task` (none at 0)."""
    if scale <= 0:
        return base
    ids = data.templates[task].unconditional_prompt().tolist()
    return replace(base, guidance=PromptSwapGuidance(scale, ids, align_response=True))


def probe_batches(run: Run, data: Data) -> dict[str, TaskBatch]:
    """A fixed batch of training examples per task (the learning curves' loss probe), padded
    as in training."""
    collate = SequenceCollator(data.tokenizers.layout, seed=run.seed, **TAIL_PAD)  # type: ignore[arg-type]
    out = {}
    for task in SHARED_TASKS:
        examples = balanced_subset(data.tasks.train[task], run.preset.probe_examples)
        out[task] = collate(list(TemplateDataset(examples, data.templates[task])))
    return out


def curve_callbacks(
    run: Run, data: Data, curves: Curves, model: str
) -> Callable[[int], LearningCurves]:
    """The learning-curve callbacks of one model (`"diffusion"` or `"autoregressive"`): for a
    stage starting `offset` steps into its training, probe losses every `curve_every` steps
    and held-out quality on `curve_examples` per task at the preset's fractions of the
    budget. The probe and the held-out examples are built once, for all stages."""
    test = test_sets(run, data, run.preset.curve_examples)
    probe = probe_batches(run, data)
    seed, guide = run.seed, run.guided

    def diffusion_loss(module: L.LightningModule, batch: TaskBatch) -> float:
        assert isinstance(module, OmniDiffusionModule)
        return float(module.step(batch, torch.Generator().manual_seed(seed)).loss)

    def causal_loss(module: L.LightningModule, batch: TaskBatch) -> float:
        ids, attention = batch["input_ids"], batch["attention_mask"]
        logits = module.backbone(ids, attention)  # type: ignore[operator]
        return float(next_token_loss(logits, ids, batch["target_mask"]))

    def quality(module: L.LightningModule) -> dict[str, float]:
        generate_fn = (
            diffusion_generate(module, task_samplers(data, 8, guide), seed)  # type: ignore[arg-type]
            if model == "diffusion"
            else autoregressive_generate(module)  # type: ignore[arg-type]
        )
        out = {}
        for task in SHARED_TASKS:
            length = data.tasks.target_lengths[task]
            generation = generate_fn(task, data.templates[task], test[task], length)
            out[task] = data.score(task, test[task], generation).value
        return out

    budget = run.preset.ar_steps
    quality_at = tuple(round(f * budget) for f in run.preset.curve_fractions)
    loss = diffusion_loss if model == "diffusion" else causal_loss

    def callback(offset: int) -> LearningCurves:
        return LearningCurves(
            curves, probe, loss, quality, offset=offset,
            loss_every=run.preset.curve_every, quality_at=quality_at,
        )  # fmt: skip

    return callback


OPTIMIZER = AdamWConfig(lr=2e-3, betas=(0.9, 0.98), weight_decay=0.01)
LR_SCHEDULE = WarmupCosine(warmup_steps=50, min_lr_ratio=0.1)


def train_diffusion(
    run: Run,
    data: Data,
    speech: tuple[SpeechEncoder, Projector] | None = None,
    curves: Curves | None = None,
) -> tuple[OmniDiffusionModule, dict[str, Any]]:
    """The diffusion model, in the paper's three stages: each stage is a new module on the
    previous stage's backbone (and speech encoder and projector, when the model hears speech
    as features), with a fresh optimiser and learning-rate schedule (as separate runs
    would have). `curves`: record its learning curves there."""
    t = time.time()
    torch.manual_seed(run.seed)  # the initial weights depend on the seed alone
    net = backbone(data.tokenizers, run.preset)
    encoder, projector = speech if speech is not None else (None, None)
    training: dict[str, Any] = {}
    module: OmniDiffusionModule | None = None
    done = 0
    callback = None if curves is None else curve_callbacks(run, data, curves, "diffusion")
    for stage, steps in zip(STAGES, run.preset.stage_steps, strict=True):
        print(f"stage {stage.name}: {sorted(stage.mixture)}", flush=True)
        module = OmniDiffusionModule(
            backbone=net,
            layout=data.tokenizers.layout,
            schedule=LinearSchedule(),
            time_distribution=AntitheticTime(),
            # upstream's rule: a time per token (every row half masked on average, the end
            # tokens attenuated by 0.6); per-row times left the miniature ignoring its
            # prompt (issue 21's diagnosis)
            mask_strategy=PerTokenTimeMasking(pad_mask_ratio=0.6),
            sampler=sampler(8),
            optimizer=replace(OPTIMIZER, lr=run.preset.lr * stage.lr_scale),
            lr_schedule=LR_SCHEDULE,
            normalization="sequence",  # each row counts once: short answers are not drowned
            seed=run.seed,
            speech_encoder=encoder,
            speech_projector=projector,
        )
        callbacks = [] if callback is None else [callback(done)]
        dropout = (DROPOUT_TASKS, run.args.prompt_dropout) if run.guided else None
        log = fit(run, data, module, stage.mixture, steps, callbacks, dropout)
        training[f"diffusion, stage {stage.name}"] = log
        done += steps
    run.lap("diffusion training", t)
    assert module is not None
    return module, training


def train_baseline(
    run: Run, data: Data, curves: Curves | None = None
) -> tuple[AutoregressiveModule, dict[str, Any]]:
    """The same backbone with causal attention, trained on the final stage's mixture.
    `curves`: record its learning curves there."""
    t = time.time()
    optimizer = replace(OPTIMIZER, lr=run.preset.lr)
    # the initial weights depend on the seed alone, not on what ran before
    torch.manual_seed(run.seed)
    ar = AutoregressiveModule(
        backbone(data.tokenizers, run.preset, causal=True), optimizer, LR_SCHEDULE
    )
    callbacks = [] if curves is None else [curve_callbacks(run, data, curves, "autoregressive")(0)]
    log = fit(run, data, ar, STAGES[-1].mixture, run.preset.ar_steps, callbacks)
    run.lap("autoregressive training", t)
    return ar, {"autoregressive, final mixture": log}


# ---------------------------------------------------------------------- 6-7. evaluation


def diffusion_generate(
    module: OmniDiffusionModule, sampler: Sampler | Mapping[str, Sampler], seed: int
) -> GenerateFn:
    """A `GenerateFn` for the diffusion model with `sampler`, or a sampler per task (speech
    heard as features goes through the module's encoder)."""

    def run_one(
        task: str, template: TaskTemplate, examples: list[Example], length: int
    ) -> Generation:
        out = generate(
            module.backbone,
            module.layout,
            sampler[task] if isinstance(sampler, Mapping) else sampler,
            template,
            examples,
            length,
            generator=torch.Generator().manual_seed(seed),
            speech=module.speech_slots if module.speech_encoder is not None else None,
        )
        return Generation(out.outputs, out.mean_nfe, out.seconds, out.trajectories or None)

    return run_one


def autoregressive_generate(model: AutoregressiveModule) -> GenerateFn:
    """A `GenerateFn` for the causal baseline (greedy, one token per forward pass)."""

    def run_one(
        task: str, template: TaskTemplate, examples: list[Example], length: int
    ) -> Generation:
        start = time.time()
        model.eval()
        prompts = [template.prompt(e, length, index=i).prompt_ids for i, e in enumerate(examples)]
        out = greedy_decode(
            model.backbone,
            prompts,
            layout=template.layout,
            modality=template.target_modality,
            max_new_tokens=length,
        )
        outputs = [template.parse(row) for row in out.ids]
        return Generation(outputs, float(out.nfe.float().mean()), time.time() - start)

    return run_one


def test_sets(run: Run, data: Data, n: int | None = None) -> dict[str, list[Example]]:
    """The held-out examples of every task (`n` per task, the preset's by default): digits
    round-robin, text-to-image written as the spoken prompts of speech-to-image."""
    n = run.preset.eval_examples if n is None else n
    test = {task: balanced_subset(data.tasks.test[task], n) for task in TASKS}
    # Paired text / spoken prompts: the same digits, in the same order, for the agreement.
    test["t2i"] = [{**e, "caption": _draw(e)} for e in test["s2i"]]
    return test


def evaluate(run: Run, data: Data, models: dict[str, GenerateFn]) -> Evaluation:
    """Every task on held-out data, inpainting's baselines, and the t2i / s2i agreement."""
    t = time.time()
    torch.manual_seed(run.seed)
    test = test_sets(run, data)
    results: dict[str, dict[str, TaskResult]] = {name: {} for name in models}
    lengths = data.tasks.target_lengths
    # known tokens after unknown ones: inpainting is not a left-to-right task
    jobs = [(n, t) for n in models for t in TASKS if (n, t) != ("autoregressive", "inpainting")]
    for name, task in tqdm(jobs, desc="evaluate", disable=not run.progress):
        generation = models[name](task, data.templates[task], test[task], lengths[task])
        results[name][task] = data.score(task, test[task], generation)
        tqdm.write(f"  {name:>14} {task:<11} {results[name][task].value:.3f}")
    # Inpainting without the text prompt: only the known half says which digit it is. And
    # the known half alone (unknown codes left blank), to see what the model adds.
    unprompted = [{k: v for k, v in e.items() if k != "caption"} for e in test["inpainting"]]
    inpainting = data.templates["inpainting"]
    no_prompt = models["diffusion"]("inpainting", inpainting, unprompted, lengths["inpainting"])
    results["diffusion"]["inpainting, no prompt"] = data.score("inpainting", unprompted, no_prompt)
    half = [torch.where(e["known_mask"], e["image_codes"], 0) for e in test["inpainting"]]
    known_only = data.score("inpainting", test["inpainting"], Generation(half, 0.0, 0.0))
    results["diffusion"]["inpainting"].extra["known half alone"] = known_only.value
    agreement = {
        name: t2i_s2i_agreement(
            _outputs(results[name]["t2i"]),
            _outputs(results[name]["s2i"]),
            data.tokenizers,
            data.digit_judge,
        )
        for name in models
    }
    run.lap("evaluation", t)
    return Evaluation(results=results, agreement=agreement, test=test)


@torch.no_grad()
def prompt_sensitivity(
    run: Run, data: Data, module: OmniDiffusionModule, ar: AutoregressiveModule, n: int = 50
) -> dict[str, dict[str, float]]:
    """Does each model listen to its prompt? Per task, the mean KL divergence between its
    predictions given an example's prompt and given the next example's (a different digit:
    the held-out subsets go round-robin over digits). Diffusion: every position of the fully
    masked response, one forward pass; the baseline: its first generated token."""
    t = time.time()
    module.eval()
    ar.eval()
    out: dict[str, dict[str, float]] = {}
    for task in TASKS:
        if task == "inpainting":
            continue
        template, length = data.templates[task], data.tasks.target_lengths[task]
        examples = balanced_subset(data.tasks.test[task], n)
        prompts = [template.prompt(e, length, index=i) for i, e in enumerate(examples)]

        def diffusion(seq: Any) -> torch.Tensor:
            logits = module.backbone(seq.ids[None])[0, seq.target_mask]
            return torch.log_softmax(logits.float(), -1)

        def causal(seq: Any) -> torch.Tensor:
            ids = torch.cat([seq.prompt_ids, torch.tensor([data.tokenizers.layout.mask_id])])
            return torch.log_softmax(ar.backbone(ids[None])[0, -1:].float(), -1)

        row = {}
        for name, predict in (("diffusion", diffusion), ("autoregressive", causal)):
            kls = []
            for i in range(len(prompts)):
                p, q = predict(prompts[i]), predict(prompts[(i + 1) % len(prompts)])
                kls.append(float((p.exp() * (p - q)).sum(-1).mean()))
            row[name] = sum(kls) / len(kls)
        out[task] = row
    run.lap("prompt sensitivity", t)
    return out


def sweep_steps(
    run: Run,
    data: Data,
    evaluation: Evaluation,
    models: dict[str, GenerateFn],
    module: OmniDiffusionModule,
) -> None:
    """Sampling steps against forward passes: quality at 1 to N steps, with Fast-dLLM's
    threshold, and the baseline's greedy decoding (into `evaluation.sweep`)."""
    t = time.time()
    settings: list[tuple[str, GenerateFn]] = [
        (f"{n} steps", diffusion_generate(module, task_samplers(data, n, run.guided), run.seed))
        for n in run.preset.sweep_steps
    ]
    threshold = fast_dllm_sampler(0.9, block_length=None)
    scales = GUIDANCE if run.guided else {}
    per_task = {t: guided(threshold, data, t, scales.get(t, 0.0)) for t in TASKS}
    settings.append(("threshold 0.9", diffusion_generate(module, per_task, run.seed)))
    settings.append(("greedy", models["autoregressive"]))
    runs = [(task, setting) for task in SWEEP_TASKS for setting in settings]
    evaluation.sweep = {task: [] for task in SWEEP_TASKS}
    for task, (setting, generate_fn) in tqdm(runs, desc="sweep", disable=not run.progress):
        examples = evaluation.test[task][: run.preset.sweep_examples]
        length = data.tasks.target_lengths[task]
        r = data.score(task, examples, generate_fn(task, data.templates[task], examples, length))
        model_name = "autoregressive" if setting == "greedy" else "diffusion"
        evaluation.sweep[task].append(
            {"model": model_name, "setting": setting, "nfe": r.nfe, "value": r.value}
        )
    # Guidance strength, a diagnostic (the recipe's scales are fixed in `GUIDANCE`): the
    # image tasks at 8 steps, with the paired written and spoken prompts.
    evaluation.guidance = []
    sweep = GUIDANCE_SWEEP if run.guided else ()
    for scale in tqdm(sweep, desc="guidance", disable=not run.progress):
        row: dict[str, Any] = {"scale": scale}
        for task in ("t2i", "s2i"):
            examples = evaluation.test[task][: run.preset.sweep_examples]
            fn = diffusion_generate(module, guided(sampler(8), data, task, scale), run.seed)
            length = data.tasks.target_lengths[task]
            result = data.score(task, examples, fn(task, data.templates[task], examples, length))
            row[task], row[f"{task} nfe"] = result.value, result.nfe
        evaluation.guidance.append(row)
    run.lap("sampling sweep", t)


# ---------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.seeds > 1:
        return run_seeds(args)
    return run_one_seed(args)


def run_seeds(args: argparse.Namespace) -> dict[str, Any]:
    """`--seeds N`: one full run per seed, then mean, standard deviation and range over them."""
    import json
    import statistics

    out, reports = args.out, []
    for k in range(args.seeds):
        seed_args = argparse.Namespace(**{**vars(args), "seed": args.seed + k, "seeds": 1,
                                          "out": out / f"seed_{args.seed + k}"})  # fmt: skip
        reports.append(run_one_seed(seed_args))
    summary: dict[str, Any] = {"seeds": [args.seed + k for k in range(args.seeds)], "results": {}}
    rows = []
    for model, tasks in reports[0]["results"].items():
        for task, first in tasks.items():
            values = [r["results"][model][task]["value"] for r in reports]
            stats = {
                "metric": first["metric"], "values": values, "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values),
            }  # fmt: skip
            summary["results"].setdefault(model, {})[task] = stats
            rows.append(
                f"| {task} | {model} | {first['metric']} | {stats['mean']:.3f} | "
                f"{stats['std']:.3f} | {stats['min']:.3f} - {stats['max']:.3f} |"
            )
    (out / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = "\n".join(
        ["| task | model | metric | mean | std | range |", "|---|---|---|---|---|---|", *rows]
    )
    (out / "seeds.md").write_text(
        f"# Mini Omni-Diffusion over {args.seeds} seeds\n\nSeeds {summary['seeds']}, preset "
        f"`{args.preset}`; each seed's report is in `seed_K/report.md`.\n\n{table}\n"
    )
    print(f"seeds summary: {out / 'seeds.md'}", flush=True)
    return summary


def run_one_seed(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the recipe (one seed), top to bottom."""
    run = Run(args=args, preset=PRESETS[args.preset])
    torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, verbose=False)
    # Lightning's start-up chatter would hide the recipe's own progress lines.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*but have no `validation_step`.*")
    warnings.filterwarnings("ignore", ".*across ranks is zero.*")
    warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
    args.out.mkdir(parents=True, exist_ok=True)

    data = prepare_data(run)
    curves = {"diffusion": Curves(), "autoregressive": Curves()}
    module, training = train_diffusion(run, data, curves=curves["diffusion"])
    ar, baseline = train_baseline(run, data, curves=curves["autoregressive"])
    training.update(baseline)
    models = {
        "diffusion": diffusion_generate(module, task_samplers(data, 8, run.guided), run.seed),
        "autoregressive": autoregressive_generate(ar),
    }
    evaluation = evaluate(run, data, models)
    evaluation.sensitivity = prompt_sensitivity(run, data, module, ar)
    sweep_steps(run, data, evaluation, models, module)
    evaluation.training = training
    evaluation.curves = curves

    t = time.time()
    report = write_report(args.out, run, data, evaluation)
    run.lap("report", t)
    print(f"done in {time.time() - run.started:.0f}s; report: {args.out / 'report.md'}", flush=True)
    return report


def _draw(example: Example) -> str:
    from mini_omni.corpus import draw_command

    return draw_command(int(example["digit"]))


def _outputs(result: TaskResult) -> list[Any]:
    assert result.generation is not None
    return result.generation.outputs


if __name__ == "__main__":
    main()
