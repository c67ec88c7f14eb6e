"""The bad-input cases of `test_bad_inputs.py`: every argument a user can get wrong, one
case per line.

A case is `(name, call, exception types, pattern)`: `call()` must raise one of the types with
a message matching `pattern` (case-insensitive), which names the argument and the problem.
Run as a script, it runs every case in this fresh interpreter (without the test-suite's
run-time type checking, which would answer first) and prints the outcomes as JSON.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from omni_blocks import Modality, VocabError, VocabLayout
from omni_blocks.backbones import EmbeddingSlots, NativeTransformer, TransformerConfig
from omni_blocks.checkpointing import (
    load_lightning_checkpoint,
    load_state_dict,
    parse_size,
    resolve_checkpoint,
)
from omni_blocks.config import REGISTRY, UntrustedConfigError, block_config, check_untrusted
from omni_blocks.data import (
    AsrTemplate,
    CaptionTemplate,
    DataError,
    GreedyPacking,
    InpaintingTemplate,
    TaskMixture,
    TaskSequence,
    TextToImageTemplate,
    collate_sequences,
)
from omni_blocks.data.collate import BatchError, check_batch
from omni_blocks.data.mixture import MixtureOrder, OmniDataModule
from omni_blocks.generation import generate
from omni_blocks.loss import masked_diffusion_loss
from omni_blocks.masking import (
    AttenuatedTailPadMasking,
    Corruption,
    PerTokenTimeMasking,
    SpanMasking,
    UniformMasking,
    check_corruption_inputs,
)
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.optim import AdamWConfig, WarmupCosine
from omni_blocks.sampling import (
    BlockPlanner,
    ClassifierFreeGuidance,
    DualCache,
    EntropyScorer,
    FixedCountPlanner,
    MaskedDiffusionSampler,
    NonFiniteLogitsError,
    PrefixCache,
    PromptSwapGuidance,
    SchedulePlanner,
    TailPenalty,
    ThresholdPlanner,
    TokenChoice,
    dream_sampler,
)
from omni_blocks.schedules import (
    AntitheticTime,
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    LogLinearSchedule,
    PolynomialSchedule,
    UniformTime,
)
from omni_blocks.tokenizers import MelVQSpeechTokenizer, PatchVQTokenizer, TextTokenizer
from omni_blocks.tokenizers.audio import check_waveforms, resample

L = VocabLayout(
    text_size=10, speech_size=4, image_size=6, special_ids={"mask": 9, "pad": 0, "eos": 0}
)
MASK = L.mask_id


@functools.cache
def net() -> NativeTransformer:
    torch.manual_seed(0)
    return NativeTransformer(L.vocab_size, 16, 32, 1, 2, max_position_embeddings=32).eval()


@functools.cache
def tok() -> TextTokenizer:
    return TextTokenizer.train_bpe(["one two three", "four five"] * 5, vocab_size=300)


@functools.cache
def layout_for_text() -> VocabLayout:
    return VocabLayout(
        tok().codebook_size, speech_size=8, image_size=8, special_ids=tok().special_ids
    )


def t2i() -> TextToImageTemplate:
    return TextToImageTemplate(layout_for_text(), tok(), image_tokens=4)


def module() -> OmniDiffusionModule:
    return OmniDiffusionModule(net(), L)


def sample(**kwargs: Any) -> Any:
    ids = torch.tensor([[1, 2, MASK, MASK]])
    sampler = kwargs.pop("sampler", MaskedDiffusionSampler())
    model = kwargs.pop("model", net())
    return sampler(model, kwargs.pop("ids", ids), layout=kwargs.pop("layout", L), **kwargs)


def constant(value: float) -> Callable[..., torch.Tensor]:
    def model(ids: torch.Tensor, mask: Any = None) -> torch.Tensor:
        return torch.full((*ids.shape, L.vocab_size), value)

    return model


def corrupt(**kwargs: Any) -> Any:
    ids = torch.tensor([[1, 2, 3, 4]])
    args = {
        "ids": ids,
        "target_mask": torch.ones_like(ids, dtype=torch.bool),
        "t": torch.tensor([0.5]),
    }
    args.update(kwargs)
    strategy = args.pop("strategy", UniformMasking())
    return strategy(
        args.pop("ids"), args.pop("target_mask"), args.pop("t"), schedule=LinearSchedule(), layout=L
    )


def loss(**kwargs: Any) -> Any:
    logits = torch.zeros(1, 4, L.vocab_size)
    targets = torch.tensor([[1, 2, 3, 4]])
    corruption = Corruption(targets, torch.tensor([[False, True, True, False]]))
    args: dict[str, Any] = {"logits": logits, "targets": targets, "corruption": corruption}
    args.update(kwargs)
    return masked_diffusion_loss(
        args.pop("logits"), args.pop("targets"), args.pop("corruption"), **args
    )


def seq(ids: list[int], target: list[bool]) -> TaskSequence:
    return TaskSequence(torch.tensor(ids), torch.tensor(target), "t", Modality.TEXT)


def batch(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_ids": torch.tensor([[1, 2, 3]]),
        "target_mask": torch.tensor([[False, True, True]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.bool),
        "task": ["t"],
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def saved_folder(tmp: Path, config: dict[str, Any]) -> Path:
    folder = tmp / "saved"
    module().save_pretrained(folder)
    document = json.loads((folder / "omni_blocks.json").read_text())
    document["module"].update(config)
    (folder / "omni_blocks.json").write_text(json.dumps(document))
    return folder


def tmp_file(name: str, content: bytes) -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    (folder / name).write_bytes(content)
    return folder


V, E, T = (ValueError,), (VocabError,), (TypeError,)
VT = (ValueError, TypeError)
CASES: list[tuple[str, Callable[[], Any], tuple[type[BaseException], ...], str]] = [
    # ------------------------------------------------------------------ VocabLayout
    ("layout float text_size", lambda: VocabLayout(text_size=8.5), E, "text_size must be an int"),
    ("layout zero text_size", lambda: VocabLayout(text_size=0), E, "text_size >= 1"),
    ("layout negative speech", lambda: VocabLayout(text_size=10, speech_size=-1), E, "speech_size"),
    (
        "layout bool image_size",
        lambda: VocabLayout(text_size=10, image_size=True),
        E,
        "image_size must be an int",
    ),
    (
        "layout unknown special",
        lambda: VocabLayout(text_size=10, special_ids={"cls": 1}),
        E,
        "unknown special token 'cls'",
    ),
    (
        "layout special outside text",
        lambda: VocabLayout(text_size=10, special_ids={"mask": 10}),
        E,
        "'mask' has id 10",
    ),
    (
        "layout float special id",
        lambda: VocabLayout(text_size=10, special_ids={"mask": 2.0}),
        E,
        "'mask' has id 2.0",
    ),
    (
        "layout shared specials",
        lambda: VocabLayout(text_size=10, special_ids={"mask": 1, "bos": 1}),
        E,
        "'mask' and 'bos' share id 1",
    ),
    (
        "layout repeated marker",
        lambda: VocabLayout(text_size=10, added_tokens=("<a>", "<a>")),
        E,
        "added_tokens repeats",
    ),
    ("layout unknown marker", lambda: L.token_id("<x>"), E, "'<x>' is not an added marker"),
    (
        "layout code out of range",
        lambda: L.to_global(torch.tensor([4]), Modality.SPEECH),
        E,
        "speech code 4 is out of range",
    ),
    (
        "layout float codes",
        lambda: L.to_global(torch.tensor([1.0]), Modality.IMAGE),
        E,
        "image codes must be an integer tensor",
    ),
    (
        "layout id not of modality",
        lambda: L.to_local(torch.tensor([1]), Modality.IMAGE),
        E,
        "image id 1 is out of range",
    ),
    ("layout unknown modality", lambda: L.size("video"), V, "'video' is not a valid Modality"),
    ("layout text has no begin", lambda: L.begin_id(Modality.TEXT), E, "text has no begin/end"),
    (
        "layout mask smaller vocab",
        lambda: L.logit_mask(Modality.TEXT, vocab_size=3),
        E,
        "vocab_size 3 is smaller",
    ),
    (
        "layout missing codebook",
        lambda: VocabLayout(text_size=10, speech_size=0).logit_mask(Modality.SPEECH),
        E,
        "no speech codebook",
    ),
    (
        "layout unknown field",
        lambda: VocabLayout.from_dict({"text_size": 3, "vocab": 4}),
        E,
        "unknown VocabLayout fields",
    ),
    (
        "layout dict not mapping",
        lambda: VocabLayout.from_dict([1, 2]),
        E,
        "a layout is a JSON object",
    ),
    ("layout id negative", lambda: L.modality_of(torch.tensor([-1])), E, "id -1 is out of range"),
    # ------------------------------------------------------------------ schedules
    (
        "schedule time above 1",
        lambda: LinearSchedule().alpha(torch.tensor([1.5])),
        V,
        r"lie in \[0, 1\]",
    ),
    (
        "schedule time negative number",
        lambda: CosineSchedule().mask_prob(-0.1),
        V,
        r"lie in \[0, 1\]",
    ),
    (
        "schedule NaN time",
        lambda: LinearSchedule().elbo_weight(float("nan")),
        V,
        r"lie in \[0, 1\]",
    ),
    (
        "schedule int tensor time",
        lambda: LinearSchedule().alpha(torch.tensor([0, 1])),
        V,
        "float tensor",
    ),
    ("schedule bool time", lambda: LinearSchedule().alpha(True), V, "got a bool"),
    ("schedule string time", lambda: LinearSchedule().alpha("0.5"), V, "float tensor"),
    ("polynomial zero exponent", lambda: PolynomialSchedule(0.0), V, "exponent must lie in"),
    ("loglinear eps 1", lambda: LogLinearSchedule(1.0), V, "eps must be < 1"),
    (
        "geometric sigma order",
        lambda: GeometricSchedule(1.0, 0.5),
        V,
        "sigma_max must be finite and > sigma_min",
    ),
    ("geometric sigma_min 0", lambda: GeometricSchedule(0.0, 1.0), V, "sigma_min must lie in"),
    ("uniform time eps 1", lambda: UniformTime(1.0), V, "eps must be < 1"),
    ("antithetic negative eps", lambda: AntitheticTime(-0.5), V, "eps must lie in"),
    ("times zero batch", lambda: UniformTime().sample(0), V, "batch_size must be a positive int"),
    (
        "times float batch",
        lambda: UniformTime().sample(2.0),
        V,
        "batch_size must be a positive int",
    ),
    (
        "times bool batch",
        lambda: AntitheticTime().sample(True),
        V,
        "batch_size must be a positive int",
    ),
    (
        "times int generator",
        lambda: UniformTime().sample(2, generator=0),
        T,
        "generator must be a torch.Generator",
    ),
    # ------------------------------------------------------------------ mask strategies
    ("mask float ids", lambda: corrupt(ids=torch.ones(1, 4)), T, "ids must be an integer tensor"),
    (
        "mask 1-d ids",
        lambda: corrupt(
            ids=torch.tensor([1, 2, 3, 4]), target_mask=torch.ones(4, dtype=torch.bool)
        ),
        V,
        r"ids must have shape \(batch, seq\)",
    ),
    (
        "mask long target",
        lambda: corrupt(target_mask=torch.ones(1, 4, dtype=torch.long)),
        T,
        "target_mask must be a bool tensor",
    ),
    (
        "mask target shape",
        lambda: corrupt(target_mask=torch.ones(1, 3, dtype=torch.bool)),
        V,
        r"target_mask has shape \(1, 3\)",
    ),
    (
        "mask times per row",
        lambda: corrupt(t=torch.tensor([0.5, 0.5])),
        V,
        "t must hold one time per row",
    ),
    ("mask time above 1", lambda: corrupt(t=torch.tensor([1.5])), V, r"lie in \[0, 1\]"),
    (
        "mask span t shape",
        lambda: corrupt(strategy=SpanMasking(), t=torch.tensor(0.5)),
        V,
        "t must hold one time per row",
    ),
    (
        "attenuated ratio above 1",
        lambda: AttenuatedTailPadMasking(pad_mask_ratio=1.5),
        V,
        r"pad_mask_ratio must lie in \[0, 1\]",
    ),
    (
        "attenuated negative weight",
        lambda: AttenuatedTailPadMasking(pad_loss_weight=-1.0),
        V,
        "pad_loss_weight must be finite and >= 0",
    ),
    (
        "attenuated infinite weight",
        lambda: AttenuatedTailPadMasking(pad_loss_weight=float("inf")),
        V,
        "pad_loss_weight must be finite",
    ),
    (
        "span length below 1",
        lambda: SpanMasking(mean_span_length=0.5),
        V,
        "mean_span_length must be finite and >= 1",
    ),
    (
        "per-token ratio",
        lambda: PerTokenTimeMasking(pad_mask_ratio=-0.1),
        V,
        r"pad_mask_ratio must lie in \[0, 1\]",
    ),
    ("per-token eps", lambda: PerTokenTimeMasking(eps=1.0), V, r"eps must lie in \[0, 1\)"),
    (
        "per-token float ids",
        lambda: corrupt(strategy=PerTokenTimeMasking(), ids=torch.ones(1, 4)),
        T,
        "ids must be an integer tensor",
    ),
    (
        "check inputs bool ids",
        lambda: check_corruption_inputs(
            torch.ones(1, 2, dtype=torch.bool),
            torch.ones(1, 2, dtype=torch.bool),
            torch.tensor([0.5]),
        ),
        T,
        "ids must be an integer tensor",
    ),
    # ------------------------------------------------------------------ loss
    (
        "loss unknown normalisation",
        lambda: loss(normalization="mean"),
        V,
        "normalization must be one of",
    ),
    (
        "loss 2-d logits",
        lambda: loss(logits=torch.zeros(4, L.vocab_size)),
        V,
        r"logits must have shape \(batch, seq, vocab\)",
    ),
    (
        "loss float targets",
        lambda: loss(targets=torch.ones(1, 4)),
        T,
        "targets must be an integer tensor",
    ),
    (
        "loss targets shape",
        lambda: loss(targets=torch.ones(1, 3, dtype=torch.long)),
        V,
        r"targets has shape \(1, 3\)",
    ),
    (
        "loss long mask",
        lambda: loss(
            corruption=Corruption(
                torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)
            )
        ),
        T,
        "corruption.mask must be a bool tensor",
    ),
    (
        "loss target beyond vocab",
        lambda: loss(targets=torch.tensor([[1, 99, 3, 4]])),
        V,
        "target id 99 at a masked position",
    ),
    (
        "loss negative weights",
        lambda: loss(
            corruption=Corruption(
                torch.ones(1, 4, dtype=torch.long),
                torch.ones(1, 4, dtype=torch.bool),
                -torch.ones(1, 4),
            )
        ),
        V,
        "loss_weight must be finite and >= 0",
    ),
    ("loss elbo without t", lambda: loss(normalization="elbo"), V, "normalization='elbo' needs"),
    ("loss t per row", lambda: loss(t=torch.tensor([0.5, 0.5])), V, "t must hold one time per row"),
    (
        "loss target_mask dtype",
        lambda: loss(target_mask=torch.ones(1, 4)),
        T,
        "target_mask must be a bool tensor",
    ),
    # ------------------------------------------------------------------ sampler parts
    ("planner zero steps", lambda: SchedulePlanner(num_steps=0), V, "num_steps must be >= 1"),
    ("planner eps 1", lambda: SchedulePlanner(eps=1.0), V, r"eps must lie in \[0, 1\)"),
    ("planner unknown rounding", lambda: SchedulePlanner(rounding="round"), VT, "rounding"),
    (
        "planner negative min tokens",
        lambda: SchedulePlanner(min_tokens=-1),
        V,
        "min_tokens must be >= 0",
    ),
    ("planner unknown arithmetic", lambda: SchedulePlanner(arithmetic="float16"), VT, "arithmetic"),
    ("fixed count zero", lambda: FixedCountPlanner(0), V, "tokens_per_step must be >= 1"),
    ("threshold NaN", lambda: ThresholdPlanner(float("nan")), V, "threshold must be a number"),
    ("block length zero", lambda: BlockPlanner(block_length=0), V, "block_length must be >= 1"),
    (
        "choice negative temperature",
        lambda: TokenChoice(temperature=-1.0),
        V,
        "temperature must be a finite number >= 0",
    ),
    (
        "choice infinite temperature",
        lambda: TokenChoice(temperature=float("inf")),
        V,
        "temperature must be a finite number",
    ),
    ("choice top_k zero", lambda: TokenChoice(top_k=0), V, "top_k must be >= 1"),
    ("choice top_p zero", lambda: TokenChoice(top_p=0.0), V, r"top_p must lie in \(0, 1\]"),
    ("choice top_p above 1", lambda: TokenChoice(top_p=1.5), V, r"top_p must lie in \(0, 1\]"),
    (
        "penalty strength below 1",
        lambda: TailPenalty(strength=0.5),
        V,
        "strength must be a finite number >= 1",
    ),
    (
        "penalty negative free",
        lambda: TailPenalty(free_positions=-1),
        V,
        "free_positions must be >= 0",
    ),
    ("penalty zero exponent", lambda: TailPenalty(exponent=0.0), V, "exponent must be > 0"),
    ("penalty unknown pool", lambda: TailPenalty(pool="all"), VT, "pool"),
    (
        "entropy negative epsilon",
        lambda: EntropyScorer(epsilon=-1.0),
        V,
        "epsilon must be a finite number >= 0",
    ),
    (
        "guidance negative scale",
        lambda: ClassifierFreeGuidance(-1.0),
        V,
        "scale must be a finite number >= 0",
    ),
    (
        "guidance infinite scale",
        lambda: ClassifierFreeGuidance(float("inf")),
        V,
        "scale must be a finite number",
    ),
    (
        "prompt swap no prompt",
        lambda: PromptSwapGuidance(2.0),
        V,
        "needs the unconditional prompt's ids",
    ),
    (
        "prompt swap too long",
        lambda: sample(
            sampler=MaskedDiffusionSampler(guidance=PromptSwapGuidance(1.0, tuple(range(1, 8))))
        ),
        V,
        "the unconditional prompt .7 tokens. and the target region do not fit",
    ),
    (
        "sampler unknown nonfinite",
        lambda: MaskedDiffusionSampler(nonfinite="skip"),
        VT,
        "nonfinite",
    ),
    ("dream unknown alg", lambda: dream_sampler(alg="greedy"), VT, "alg"),
    # ------------------------------------------------------------------ the sampler's call
    (
        "sample float ids",
        lambda: sample(ids=torch.tensor([[1.0, 9.0]])),
        VT,
        "ids must be an integer tensor",
    ),
    ("sample 1-d ids", lambda: sample(ids=torch.tensor([1, MASK])), V, r"ids must be a 2-d tensor"),
    (
        "sample id beyond layout",
        lambda: sample(ids=torch.tensor([[99, MASK]])),
        V,
        "id 99 lies outside the layout",
    ),
    (
        "sample meta ids",
        lambda: sample(ids=torch.zeros(1, 2, dtype=torch.long, device="meta")),
        V,
        "meta device",
    ),
    ("sample int generator", lambda: sample(generator=0), T, "generator must be a torch.Generator"),
    (
        "sample target shape",
        lambda: sample(target_mask=torch.ones(1, 3, dtype=torch.bool)),
        V,
        "target_mask must have the shape of ids",
    ),
    (
        "sample target dtype",
        lambda: sample(target_mask=torch.ones(1, 4, dtype=torch.long)),
        T,
        "target_mask must be a bool tensor",
    ),
    (
        "sample mask outside target",
        lambda: sample(target_mask=torch.tensor([[False, False, True, False]])),
        V,
        "masked position.s. lie outside `target_mask`",
    ),
    (
        "sample mask under padding",
        lambda: sample(attention_mask=torch.tensor([[True, True, True, False]])),
        V,
        "masked positions lie under padding",
    ),
    (
        "sample attention dtype",
        lambda: sample(attention_mask=torch.ones(1, 4, dtype=torch.long)),
        T,
        "attention_mask must be a bool tensor",
    ),
    ("sample unknown modality", lambda: sample(modality="video"), V, "unknown modality 'video'"),
    (
        "sample modality absent",
        lambda: sample(
            layout=VocabLayout(text_size=10, speech_size=0, image_size=6, special_ids={"mask": 9}),
            modality=Modality.SPEECH,
        ),
        V,
        "no speech ids to generate",
    ),
    (
        "sample logits wrong shape",
        lambda: sample(model=lambda ids, mask=None: torch.zeros(1, 2, L.vocab_size)),
        V,
        "the model must return logits of shape",
    ),
    (
        "sample logits too few",
        lambda: sample(model=lambda ids, mask=None: torch.zeros(*ids.shape, 5)),
        V,
        "the model's logits have 5 entries",
    ),
    (
        "sample NaN logits",
        lambda: sample(model=constant(float("nan"))),
        (NonFiniteLogitsError,),
        r"step 0: the model returned NaN .*row.s. \[0\]",
    ),
    (
        "sample +inf logits",
        lambda: sample(model=constant(float("inf"))),
        (NonFiniteLogitsError,),
        r"step 0: the model returned \+inf",
    ),
    (
        "sample -inf everywhere",
        lambda: sample(model=constant(float("-inf"))),
        (NonFiniteLogitsError,),
        "only -inf",
    ),
    (
        "sample slots in target",
        lambda: sample(
            slots=EmbeddingSlots(torch.tensor([[False, False, True, False]]), torch.zeros(1, 16))
        ),
        V,
        "embedding slots lie in the target region",
    ),
    # ------------------------------------------------------------------ backbones
    (
        "backbone float ids",
        lambda: net()(torch.ones(1, 3)),
        T,
        "input_ids must be an integer tensor",
    ),
    (
        "backbone id beyond vocab",
        lambda: net()(torch.tensor([[0, 99]])),
        V,
        r"token ids must lie in \[0, 25\)",
    ),
    ("backbone negative id", lambda: net()(torch.tensor([[-1, 2]])), V, r"token ids must lie in"),
    (
        "backbone too long",
        lambda: net()(torch.zeros(1, 40, dtype=torch.long)),
        V,
        "longer than this backbone's max_position_embeddings=32",
    ),
    (
        "backbone mask and segments",
        lambda: net()(
            torch.zeros(1, 4, dtype=torch.long),
            torch.ones(1, 4, dtype=torch.bool),
            segment_ids=torch.ones(1, 4, dtype=torch.long),
        ),
        V,
        "either attention_mask or segment_ids",
    ),
    (
        "backbone segments shape",
        lambda: net()(torch.zeros(1, 4, dtype=torch.long), segment_ids=torch.ones(1, 3).long()),
        V,
        "segment_ids must have the shape of input_ids",
    ),
    (
        "backbone float segments",
        lambda: net()(torch.zeros(1, 4, dtype=torch.long), segment_ids=torch.ones(1, 4)),
        T,
        "segment_ids must be an integer tensor",
    ),
    (
        "backbone negative segments",
        lambda: net()(torch.zeros(1, 2, dtype=torch.long), segment_ids=torch.tensor([[1, -1]])),
        V,
        "segment_ids must be >= 0",
    ),
    ("packing length", lambda: GreedyPacking(length=0), V, "length must be >= 1"),
    ("packing float mask", lambda: GreedyPacking().plan(torch.ones(2, 3)), V, "2-d bool"),
    ("cache refresh", lambda: PrefixCache(refresh_every=-1), V, "refresh_every must be >= 0"),
    (
        "cache bad window",
        lambda: net().forward_cached(
            torch.zeros(1, 4, dtype=torch.long),
            cache=net().forward_cached(torch.zeros(1, 4, dtype=torch.long))[1],
            window=(3, 2),
        ),
        V,
        "window must be",
    ),
    (
        "cache without caching backbone",
        lambda: MaskedDiffusionSampler(cache=DualCache())(
            constant(0.0), torch.tensor([[1, L.mask_id]]), layout=L
        ),
        T,
        "forward_cached",
    ),
    (
        "backbone meta ids",
        lambda: net()(torch.zeros(1, 2, dtype=torch.long, device="meta")),
        V,
        "meta device",
    ),
    (
        "backbone 1-d ids",
        lambda: net()(torch.zeros(3, dtype=torch.long)),
        V,
        r"input_ids must be \(batch, seq\)",
    ),
    (
        "backbone slot width",
        lambda: net()(
            torch.zeros(1, 3, dtype=torch.long),
            slots=EmbeddingSlots(torch.tensor([[True, False, False]]), torch.zeros(1, 7)),
        ),
        V,
        "slot embeddings are 7 wide but the backbone's are 16",
    ),
    (
        "backbone slot shape",
        lambda: net()(
            torch.zeros(1, 3, dtype=torch.long),
            slots=EmbeddingSlots(torch.tensor([[True, False]]), torch.zeros(1, 16)),
        ),
        V,
        "slot positions of shape",
    ),
    (
        "slots count",
        lambda: EmbeddingSlots(torch.tensor([[True, True]]), torch.zeros(1, 4)),
        V,
        "the slots hold 2 positions but 1 embeddings",
    ),
    (
        "slots dtype",
        lambda: EmbeddingSlots(torch.tensor([[1, 0]]), torch.zeros(1, 4)),
        V,
        "slot positions must be a bool tensor",
    ),
    (
        "config heads divide width",
        lambda: TransformerConfig(10, 30, 8, 1, 4),
        V,
        "hidden_size=30 must be divisible by num_attention_heads=4",
    ),
    (
        "config kv heads divide",
        lambda: TransformerConfig(10, 32, 8, 1, 4, num_key_value_heads=3),
        V,
        "must be a multiple of num_key_value_heads=3",
    ),
    (
        "config zero layers",
        lambda: TransformerConfig(10, 32, 8, 0, 4),
        V,
        "num_hidden_layers must be a positive integer",
    ),
    (
        "config dropout 1",
        lambda: TransformerConfig(10, 32, 8, 1, 4, attention_dropout=1.0),
        V,
        r"attention_dropout must lie in \[0, 1\)",
    ),
    (
        "config act",
        lambda: TransformerConfig.from_dict(
            {
                "vocab_size": 1,
                "hidden_size": 8,
                "intermediate_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "hidden_act": "gelu",
            }
        ),
        V,
        "hidden_act='gelu'",
    ),
    (
        "config missing field",
        lambda: TransformerConfig.from_dict({"vocab_size": 1}),
        V,
        "lacks the required fields",
    ),
    (
        "backbone missing folder",
        lambda: NativeTransformer.from_pretrained("/no/such/folder"),
        (FileNotFoundError,),
        "neither a checkpoint folder nor a hub repository id",
    ),
    (
        "backbone bad hub name",
        lambda: NativeTransformer.from_pretrained("not a repo!"),
        (FileNotFoundError,),
        "neither a checkpoint folder nor a hub repository id",
    ),
    (
        "corrupt safetensors",
        lambda: load_state_dict(tmp_file("model.safetensors", b"not a safetensors file")),
        V,
        r"model.safetensors is not a readable safetensors file",
    ),
    (
        "pickled weights refused",
        lambda: load_state_dict(tmp_file("pytorch_model.bin", b"x")),
        (FileNotFoundError,),
        "refused unless you pass allow_pickle=True",
    ),
    (
        "no weights",
        lambda: load_state_dict(tmp_file("x.txt", b"x")),
        (FileNotFoundError,),
        "no model.safetensors",
    ),
    ("bad size", lambda: parse_size("lots"), V, "cannot read the size 'lots'"),
    ("zero size", lambda: parse_size(0), V, "a size must be positive"),
    (
        "missing checkpoint file",
        lambda: resolve_checkpoint("/no/such/dir/x"),
        (FileNotFoundError,),
        "neither a checkpoint folder",
    ),
    # ------------------------------------------------------------------ tokenizers and audio
    (
        "text encode int",
        lambda: tok().encode(123),
        T,
        "TextTokenizer.encode expects a string or a list of strings",
    ),
    (
        "text encode list of ints",
        lambda: tok().encode([1, 2]),
        T,
        "TextTokenizer.encode expects strings",
    ),
    (
        "audio int16",
        lambda: check_waveforms(
            torch.zeros(10, dtype=torch.int16), sample_rate=16000, expected_rate=16000
        ),
        T,
        "int16 PCM use wave.float.. / 32768",
    ),
    (
        "audio far above full scale",
        lambda: check_waveforms(torch.full((10,), 1000.0), sample_rate=16000, expected_rate=16000),
        V,
        r"peaks at 1000, but samples must lie in \[-1, 1\]",
    ),
    (
        "audio wrong rate",
        lambda: check_waveforms(torch.zeros(10), sample_rate=8000, expected_rate=16000),
        V,
        "sample rate 8000 Hz but this tokenizer needs 16000 Hz",
    ),
    (
        "audio stereo",
        lambda: check_waveforms([torch.zeros(2, 10)], sample_rate=16000, expected_rate=16000),
        V,
        "has 2 channels",
    ),
    (
        "audio empty",
        lambda: check_waveforms(torch.zeros(0), sample_rate=16000, expected_rate=16000),
        V,
        "is empty",
    ),
    (
        "audio NaN",
        lambda: check_waveforms(
            torch.full((3,), float("nan")), sample_rate=16000, expected_rate=16000
        ),
        V,
        "NaN or infinite samples",
    ),
    (
        "audio numpy",
        lambda: check_waveforms([[0.0, 0.1]], sample_rate=16000, expected_rate=16000),
        T,
        "must be a torch.Tensor",
    ),
    (
        "audio string",
        lambda: check_waveforms("a.wav", sample_rate=16000, expected_rate=16000),
        T,
        "must be a torch.Tensor or a list",
    ),
    (
        "audio 4-d",
        lambda: check_waveforms(torch.zeros(1, 1, 1, 4), sample_rate=16000, expected_rate=16000),
        V,
        r"must be \(time,\)",
    ),
    (
        "audio empty list",
        lambda: check_waveforms([], sample_rate=16000, expected_rate=16000),
        V,
        "is an empty list",
    ),
    ("resample negative rate", lambda: resample(torch.zeros(10), -1, 16000), V, "rate"),
    (
        "mel vq not fitted",
        lambda: MelVQSpeechTokenizer(codebook_size=4).encode(torch.zeros(2000)),
        (RuntimeError, ValueError),
        "no codebook yet",
    ),
    (
        "patch vq not fitted",
        lambda: PatchVQTokenizer(codebook_size=4).encode(torch.zeros(1, 1, 8, 8)),
        (RuntimeError,),
        "no codebook yet",
    ),
    (
        "patch vq wrong channels",
        lambda: PatchVQTokenizer(codebook_size=4, channels=1).fit(torch.zeros(2, 3, 8, 8)),
        VT,
        "channel",
    ),
    # ------------------------------------------------------------------ data
    (
        "template example not dict",
        lambda: t2i().build(["seven"]),
        (DataError,),
        "examples are dicts, got list",
    ),
    (
        "template missing caption",
        lambda: t2i().build({"image_codes": torch.zeros(4, dtype=torch.long)}),
        (DataError,),
        "needs a 'caption' string",
    ),
    (
        "template empty caption",
        lambda: t2i().build({"caption": " ", "image_codes": torch.zeros(4, dtype=torch.long)}),
        (DataError,),
        "'caption' is empty",
    ),
    (
        "template caption not str",
        lambda: t2i().build({"caption": 7, "image_codes": torch.zeros(4, dtype=torch.long)}),
        (DataError,),
        "'caption' must be a string",
    ),
    (
        "template float codes",
        lambda: t2i().build({"caption": "one", "image_codes": torch.zeros(4)}),
        (DataError,),
        "'image_codes' must hold integer image codes",
    ),
    (
        "template code count",
        lambda: t2i().build({"caption": "one", "image_codes": torch.zeros(3, dtype=torch.long)}),
        (DataError,),
        "has 3 image codes, expected 4",
    ),
    (
        "template code range",
        lambda: t2i().build({"caption": "one", "image_codes": torch.full((4,), 8)}),
        (DataError,),
        r"outside the image codebook \[0, 8\)",
    ),
    (
        "template no target length",
        lambda: AsrTemplate(layout_for_text(), tok()).prompt(
            {"speech_codes": torch.zeros(3, dtype=torch.long)}
        ),
        (DataError,),
        "needs target_length",
    ),
    (
        "template target length zero",
        lambda: AsrTemplate(layout_for_text(), tok()).prompt(
            {"speech_codes": torch.zeros(3, dtype=torch.long)}, 0
        ),
        (DataError,),
        "target_length must be positive",
    ),
    (
        "template speech 2-d",
        lambda: AsrTemplate(layout_for_text(), tok()).build(
            {"text": "one", "speech_codes": torch.zeros(2, 2, dtype=torch.long)}
        ),
        (DataError,),
        "'speech_codes' must be 1-D",
    ),
    (
        "template image target too short",
        lambda: t2i().prompt({"caption": "one"}, 3),
        (DataError,),
        "image targets need target_length >= image_tokens . 1 = 5",
    ),
    (
        "template too long",
        lambda: TextToImageTemplate(layout_for_text(), tok(), image_tokens=4, max_length=5).build(
            {"caption": "one", "image_codes": torch.zeros(4, dtype=torch.long)}
        ),
        (DataError,),
        "more than max_length=5",
    ),
    (
        "template bad image_tokens",
        lambda: CaptionTemplate(layout_for_text(), tok(), image_tokens=0),
        V,
        "image_tokens must be positive",
    ),
    (
        "template layout lacks speech",
        lambda: AsrTemplate(
            VocabLayout(tok().codebook_size, speech_size=0, special_ids=tok().special_ids), tok()
        ),
        E,
        "needs a speech codebook",
    ),
    (
        "template tokenizer too big",
        lambda: AsrTemplate(VocabLayout(5, speech_size=4), tok()),
        E,
        "the text tokenizer has .* ids but the layout's text range holds 5",
    ),
    (
        "inpainting known mask dtype",
        lambda: InpaintingTemplate(layout_for_text(), tok(), image_tokens=4).prompt(
            {"image_codes": torch.zeros(4, dtype=torch.long), "known_mask": torch.ones(4)}
        ),
        (DataError,),
        "'known_mask' must be a bool tensor",
    ),
    (
        "sequence shapes",
        lambda: TaskSequence(torch.tensor([1, 2]), torch.tensor([True]), "t", Modality.TEXT),
        (DataError,),
        "must have the same shape",
    ),
    (
        "sequence float ids",
        lambda: TaskSequence(torch.tensor([1.0]), torch.tensor([True]), "t", Modality.TEXT),
        (DataError,),
        "TaskSequence.ids must be int64",
    ),
    ("collate empty", lambda: collate_sequences([], L), (DataError,), "empty batch"),
    (
        "collate target not last",
        lambda: collate_sequences([seq([1, 2, 3], [True, False, False])], L),
        (DataError,),
        "has no target block at its end",
    ),
    (
        "collate too long",
        lambda: collate_sequences([seq([1, 2, 3], [False, True, True])], L, max_length=2),
        (DataError,),
        "more than max_length=2",
    ),
    (
        "collate bad tail range",
        lambda: collate_sequences([seq([1, 2], [False, True])], L, extra_tail_pad=(3, 1)),
        V,
        "extra_tail_pad must be >= 0",
    ),
    (
        "collate bad multiple",
        lambda: collate_sequences([seq([1, 2], [False, True])], L, pad_to_multiple_of=0),
        V,
        "pad_to_multiple_of must be positive",
    ),
    ("mixture no datasets", lambda: TaskMixture({}), V, "needs at least one dataset"),
    ("mixture empty dataset", lambda: TaskMixture({"a": []}), V, r"datasets \['a'\] are empty"),
    ("mixture ratio names", lambda: TaskMixture({"a": [1]}, {"b": 1.0}), V, "ratios name tasks"),
    (
        "mixture negative ratio",
        lambda: TaskMixture({"a": [1]}, {"a": -1.0}),
        V,
        "ratios must be positive and finite",
    ),
    (
        "mixture zero samples",
        lambda: TaskMixture({"a": [1]}, num_samples=0),
        V,
        "num_samples must be positive",
    ),
    (
        "order bad rank",
        lambda: MixtureOrder(TaskMixture({"a": [1, 2]}), rank=2, world_size=2),
        V,
        "need 0 <= rank < world_size",
    ),
    (
        "order bad start",
        lambda: MixtureOrder(TaskMixture({"a": [1, 2]}), world_size=2, start=1),
        V,
        "start must be a non-negative multiple",
    ),
    (
        "datamodule batch size",
        lambda: OmniDataModule(L, [seq([1, 2], [False, True])], batch_size=0),
        V,
        "batch sizes must be positive",
    ),
    (
        "datamodule workers",
        lambda: OmniDataModule(L, [seq([1, 2], [False, True])], num_workers=-1),
        V,
        "num_workers must be >= 0",
    ),
    # ------------------------------------------------------------------ the module
    (
        "module normalisation",
        lambda: OmniDiffusionModule(net(), L, normalization="mean"),
        V,
        "normalization must be one of",
    ),
    (
        "module negative seed",
        lambda: OmniDiffusionModule(net(), L, seed=-1),
        V,
        "seed must be an int >= 0",
    ),
    ("module float seed", lambda: OmniDiffusionModule(net(), L, seed=1.5), VT, "seed"),
    (
        "module backbone not module",
        lambda: OmniDiffusionModule(lambda ids: ids, L),
        VT,
        "backbone must be a torch.nn.Module",
    ),
    (
        "module vocab too small",
        lambda: OmniDiffusionModule(net(), VocabLayout(text_size=30)),
        V,
        "the backbone has 25 vocabulary rows but the layout needs",
    ),
    (
        "batch missing key",
        lambda: check_batch(batch(target_mask=None), L),
        (BatchError,),
        r"the batch lacks \['target_mask'\]",
    ),
    (
        "batch float ids",
        lambda: check_batch(batch(input_ids=torch.ones(1, 3)), L),
        (BatchError,),
        r"batch\['input_ids'\] must be an int64 tensor",
    ),
    (
        "batch long target",
        lambda: check_batch(batch(target_mask=torch.ones(1, 3, dtype=torch.long)), L),
        (BatchError,),
        r"batch\['target_mask'\] must be a bool tensor",
    ),
    (
        "batch shape",
        lambda: check_batch(batch(attention_mask=torch.ones(1, 2, dtype=torch.bool)), L),
        (BatchError,),
        r"batch\['attention_mask'\] has shape",
    ),
    (
        "batch task count",
        lambda: check_batch(batch(task=["a", "b"]), L),
        (BatchError,),
        r"batch\['task'\] names 2 rows",
    ),
    (
        "batch id beyond layout",
        lambda: check_batch(batch(input_ids=torch.tensor([[1, 2, 99]])), L),
        (BatchError,),
        r"input_ids in \[1, 99\] fall outside .* \(tasks \['t'\]\)",
    ),
    (
        "batch too long",
        lambda: check_batch(batch(), L, max_positions=2),
        (BatchError,),
        "exceed the backbone's max_position_embeddings=2",
    ),
    (
        "generate without sampler",
        lambda: module().generate(t2i(), []),
        V,
        "the module has no sampler",
    ),
    (
        "generate other layout",
        lambda: generate(net(), L, MaskedDiffusionSampler(), t2i(), []),
        V,
        "the template's layout .* differs from the model's",
    ),
    (
        "generate batch size",
        lambda: generate(
            net(), layout_for_text(), MaskedDiffusionSampler(), t2i(), [], batch_size=0
        ),
        V,
        "batch_size must be a positive int",
    ),
    ("optimizer lr", lambda: AdamWConfig(lr=-1.0), V, "lr"),
    ("lr warmup negative", lambda: WarmupCosine(warmup_steps=-1), V, "warmup_steps"),
    # ------------------------------------------------------------------ saved files and configs
    (
        "config unregistered class",
        lambda: check_untrusted({"x": {"class_path": "os.system"}}),
        (UntrustedConfigError,),
        "class path 'os.system' is not one of omni_blocks' blocks",
    ),
    (
        "config trust switch",
        lambda: check_untrusted({"backbone": {"init_args": {"trust_remote_code": True}}}),
        (UntrustedConfigError,),
        "sets trust_remote_code=True",
    ),
    (
        "config allow pickle",
        lambda: check_untrusted({"a": [{"allow_pickle": 1}]}),
        (UntrustedConfigError,),
        "sets allow_pickle=1",
    ),
    (
        "config importable string",
        lambda: check_untrusted({"a": {"init_args": {"fn": "subprocess.run"}}}),
        (UntrustedConfigError,),
        "'subprocess.run' under 'fn'",
    ),
    (
        "registry unknown",
        lambda: REGISTRY.resolve("omni_blocks.nothing.Here"),
        (UntrustedConfigError,),
        "not one of omni_blocks' blocks",
    ),
    (
        "unrecordable block",
        lambda: block_config(type("Opaque", (), {"__init__": lambda self, x: None})(1)),
        T,
        "cannot record the configuration of Opaque",
    ),
    (
        "module from config unknown key",
        lambda: OmniDiffusionModule.from_config(
            {"layout": L.to_dict(), "colour": 1}, backbone=net()
        ),
        V,
        r"unknown OmniDiffusionModule arguments \['colour'\]",
    ),
    (
        "module from config no backbone",
        lambda: OmniDiffusionModule.from_config({"backbone": None, "layout": L.to_dict()}),
        V,
        "records no backbone",
    ),
    (
        "load url checkpoint",
        lambda: load_lightning_checkpoint(OmniDiffusionModule, "https://example.com/x.ckpt"),
        V,
        "is a URL",
    ),
    (
        "load missing checkpoint",
        lambda: load_lightning_checkpoint(OmniDiffusionModule, "/no/such.ckpt"),
        (FileNotFoundError,),
        "no/such.ckpt",
    ),
    (
        "load pickle checkpoint",
        lambda: load_lightning_checkpoint(
            OmniDiffusionModule, tmp_file("x.ckpt", b"garbage") / "x.ckpt"
        ),
        V,
        "cannot read .* with torch.load.weights_only=True.",
    ),
    (
        "from_pretrained not a module folder",
        lambda: OmniDiffusionModule.from_pretrained(tmp_file("config.json", b"{}")),
        (FileNotFoundError,),
        "has no omni_blocks.json",
    ),
]


def run_all() -> dict[str, dict[str, Any]]:
    """Each case's outcome: the exception's class names (MRO) and message, or nothing."""
    outcomes: dict[str, dict[str, Any]] = {}
    for name, call, _, _ in CASES:
        try:
            call()
        except BaseException as err:  # the outcome is what we record
            outcomes[name] = {
                "types": [c.__name__ for c in type(err).__mro__],
                "message": str(err),
            }
        else:
            outcomes[name] = {"types": [], "message": "no error"}
    return outcomes


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(run_all()))
