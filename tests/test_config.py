"""Every schedule, time distribution and mask strategy is buildable from LightningCLI config.

LightningCLI parses `class_path` / `init_args` with jsonargparse, which accepts a subclass of
the block's base class. These tests parse the YAML shown in the docs and every block's
`class_path` the same way.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from omni_blocks import masking, schedules
from omni_blocks.masking import (
    AttenuatedTailPadMasking,
    MaskStrategy,
    SpanMasking,
    UniformMasking,
)
from omni_blocks.schedules import (
    AntitheticTime,
    CosineSchedule,
    LinearSchedule,
    NoiseSchedule,
    TimeDistribution,
    TimeLike,
    UniformTime,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
YAML_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.DOTALL | re.MULTILINE)


class StandIn:
    """Takes the three blocks like `OmniDiffusionModule` does."""

    def __init__(
        self,
        schedule: NoiseSchedule = LinearSchedule(),  # noqa: B008
        time_distribution: TimeDistribution = UniformTime(),  # noqa: B008
        mask_strategy: MaskStrategy = UniformMasking(),  # noqa: B008
    ) -> None:
        self.schedule = schedule
        self.time_distribution = time_distribution
        self.mask_strategy = mask_strategy


def build(config: dict[str, object]) -> StandIn:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(StandIn, "model")
    cfg = parser.parse_object({"model": config})
    model = parser.instantiate(cfg).model
    assert isinstance(model, StandIn)
    return model


def blocks(module: object, protocol: type) -> list[type]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if dataclasses.is_dataclass(obj)
        and obj.__module__ == getattr(module, "__name__", None)
        and obj is not masking.Corruption
        and issubclass(obj, protocol)
        and not inspect.isabstract(obj)
    ]


ARGUMENT = {
    NoiseSchedule: "schedule",
    TimeDistribution: "time_distribution",
    MaskStrategy: "mask_strategy",
}
CASES = [
    (cls, protocol)
    for module, protocols in (
        (schedules, (NoiseSchedule, TimeDistribution)),
        (masking, (MaskStrategy,)),
    )
    for protocol in protocols
    for cls in blocks(module, protocol)
]


def test_every_block_is_found() -> None:
    names = {cls.__name__ for cls, _ in CASES}
    assert {
        "LinearSchedule",
        "CosineSchedule",
        "PolynomialSchedule",
        "MaskGITPowerSchedule",
        "LogLinearSchedule",
        "GeometricSchedule",
        "UniformTime",
        "AntitheticTime",
        "UniformMasking",
        "FullSequenceMasking",
        "AttenuatedTailPadMasking",
        "SpanMasking",
    } <= names


@pytest.mark.parametrize(("cls", "protocol"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_block_builds_from_class_path(cls: type, protocol: type) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    key = ARGUMENT[protocol]
    model = build({key: {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": defaults}})
    block = getattr(model, key)
    assert type(block) is cls and block == cls()


def test_yaml_in_the_docs_builds_the_blocks() -> None:
    page = (DOCS / "concepts" / "schedules-and-masking.md").read_text()
    (snippet,) = YAML_FENCE.findall(page)
    config = yaml.safe_load(snippet)["model"]["init_args"]
    model = build(config)
    assert model.schedule == CosineSchedule()
    assert model.time_distribution == AntitheticTime(eps=0.001)
    assert model.mask_strategy == AttenuatedTailPadMasking(pad_mask_ratio=0.6)
    # the one-line swap
    config["schedule"] = {"class_path": "omni_blocks.schedules.LinearSchedule"}
    assert build(config).schedule == LinearSchedule()


def test_bad_init_args_are_rejected() -> None:
    with pytest.raises(Exception, match="pad_mask_ratio"):
        build(
            {
                "mask_strategy": {
                    "class_path": "omni_blocks.masking.AttenuatedTailPadMasking",
                    "init_args": {"pad_mask_ratio": 2.0},
                }
            }
        )


@dataclasses.dataclass(frozen=True)
class ExponentialSchedule(NoiseSchedule):
    """The tutorial's custom schedule (docs/tutorials/custom-schedule.md), as a user writes it."""

    rate: float = 3.0

    def _alpha(self, t: TimeLike) -> TimeLike:
        return 1.0 - self._mask_prob(t)

    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        return -self.rate * torch.exp(-self.rate * t) / -math.expm1(-self.rate)

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        return torch.expm1(-self.rate * t) / math.expm1(-self.rate)

    def _elbo_weight(self, t: TimeLike) -> TimeLike:
        return self.rate / torch.expm1(self.rate * t)


def test_a_custom_schedule_plugs_in_by_config() -> None:
    model = build(
        {"schedule": {"class_path": f"{__name__}.ExponentialSchedule", "init_args": {"rate": 2.0}}}
    )
    assert model.schedule == ExponentialSchedule(2.0)


def test_command_line_swap() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(StandIn, "model")
    cfg = parser.parse_args(
        [
            "--model.mask_strategy=omni_blocks.masking.SpanMasking",
            "--model.mask_strategy.mean_span_length=4",
            "--model.time_distribution=omni_blocks.schedules.AntitheticTime",
        ]
    )
    model = parser.instantiate(cfg).model
    assert model.mask_strategy == SpanMasking(4.0)
    assert model.time_distribution == AntitheticTime()


# ---------------------------------------------------------------------------------- samplers

from omni_blocks import sampling  # noqa: E402
from omni_blocks.config import block_config  # noqa: E402
from omni_blocks.sampling import (  # noqa: E402
    BlockPlanner,
    ClassifierFreeGuidance,
    ConfidenceScorer,
    EntropyScorer,
    MaskedDiffusionSampler,
    PositionPenalty,
    Sampler,
    SchedulePlanner,
    TailPenalty,
    ThresholdPlanner,
    TokenChoice,
    TokenChooser,
    UnmaskPlanner,
)
from omni_blocks.sampling import choice as sampling_choice  # noqa: E402
from omni_blocks.sampling import penalties as sampling_penalties  # noqa: E402
from omni_blocks.sampling import planners as sampling_planners  # noqa: E402
from omni_blocks.sampling import scorers as sampling_scorers  # noqa: E402


class SamplerStandIn:
    """Takes a sampler like `OmniDiffusionModule` does (YAML key `model.sampler`)."""

    def __init__(self, sampler: Sampler = MaskedDiffusionSampler()) -> None:  # noqa: B008
        self.sampler = sampler


def build_sampler(config: dict[str, object]) -> Sampler:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SamplerStandIn, "model")
    cfg = parser.parse_object({"model": {"sampler": config}})
    sampler = parser.instantiate(cfg).model.sampler
    assert isinstance(sampler, MaskedDiffusionSampler)
    return sampler


SAMPLER_FIELD = {
    ConfidenceScorer: "scorer",
    PositionPenalty: "penalty",
    UnmaskPlanner: "planner",
    TokenChooser: "choice",
}
SAMPLER_CASES = [
    (cls, protocol)
    for module, protocol in (
        (sampling_scorers, ConfidenceScorer),
        (sampling_penalties, PositionPenalty),
        (sampling_planners, UnmaskPlanner),
        (sampling_choice, TokenChooser),
    )
    for cls in blocks(module, protocol)
]


def test_every_sampling_block_is_found() -> None:
    assert {cls.__name__ for cls, _ in SAMPLER_CASES} == {
        "MaxProbScorer",
        "MarginScorer",
        "EntropyScorer",
        "RandomScorer",
        "NoPenalty",
        "TailPenalty",
        "SchedulePlanner",
        "FixedCountPlanner",
        "ThresholdPlanner",
        "BlockPlanner",
        "TokenChoice",
    }


def class_path(cls: type) -> str:
    """The public import path (`omni_blocks.sampling.X`), as users write it."""
    assert getattr(sampling, cls.__name__) is cls
    return f"omni_blocks.sampling.{cls.__name__}"


@pytest.mark.parametrize(
    ("cls", "protocol"), SAMPLER_CASES, ids=[c.__name__ for c, _ in SAMPLER_CASES]
)
def test_sampling_block_builds_from_class_path(cls: type, protocol: type) -> None:
    key = SAMPLER_FIELD[protocol]
    # scalar init_args only: nested blocks keep their defaults
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if isinstance(f.default, (int, float, str, type(None)))
    }
    sampler = build_sampler(
        {
            "class_path": "omni_blocks.sampling.MaskedDiffusionSampler",
            "init_args": {key: {"class_path": class_path(cls), "init_args": defaults}},
        }
    )
    assert getattr(sampler, key) == cls()


def test_a_whole_sampler_builds_from_nested_config() -> None:
    config = {
        "class_path": "omni_blocks.sampling.MaskedDiffusionSampler",
        "init_args": {
            "planner": {
                "class_path": "omni_blocks.sampling.BlockPlanner",
                "init_args": {
                    "block_length": 16,
                    "planner": {
                        "class_path": "omni_blocks.sampling.SchedulePlanner",
                        "init_args": {
                            "schedule": {"class_path": "omni_blocks.schedules.CosineSchedule"},
                            "num_steps": 32,
                            "rounding": "ceil",
                        },
                    },
                },
            },
            "scorer": {"class_path": "omni_blocks.sampling.EntropyScorer"},
            "penalty": {
                "class_path": "omni_blocks.sampling.TailPenalty",
                "init_args": {"strength": 2.0},
            },
            "choice": {
                "class_path": "omni_blocks.sampling.TokenChoice",
                "init_args": {"top_p": 0.9},
            },
            "guidance": {"scale": 2.0},
        },
    }
    assert build_sampler(config) == MaskedDiffusionSampler(
        planner=BlockPlanner(SchedulePlanner(CosineSchedule(), 32, rounding="ceil"), 16),
        scorer=EntropyScorer(),
        penalty=TailPenalty(2.0),
        choice=TokenChoice(top_p=0.9),
        guidance=ClassifierFreeGuidance(2.0),
    )


def test_sampler_presets_round_trip_through_config() -> None:
    for preset in (
        sampling.dream_sampler(),
        sampling.llada_sampler(guidance_scale=1.0),
        sampling.fast_dllm_sampler(),
        sampling.omni_diffusion_sampler(position_penalty=2.0, guidance_scale=2.0),
        MaskedDiffusionSampler(planner=SchedulePlanner(CosineSchedule(), 8)),
    ):
        config = yaml.safe_load(yaml.safe_dump(block_config(preset)))
        assert build_sampler(config) == preset


def test_bad_sampler_init_args_are_rejected() -> None:
    with pytest.raises(Exception, match=r"threshold|planner"):
        build_sampler(
            {
                "class_path": "omni_blocks.sampling.MaskedDiffusionSampler",
                "init_args": {
                    "planner": {
                        "class_path": "omni_blocks.sampling.ThresholdPlanner",
                        "init_args": {"threshold": "high"},
                    }
                },
            }
        )
    with pytest.raises(Exception, match="strength"):
        build_sampler(
            {
                "class_path": "omni_blocks.sampling.MaskedDiffusionSampler",
                "init_args": {
                    "penalty": {
                        "class_path": "omni_blocks.sampling.TailPenalty",
                        "init_args": {"strength": 0.5},
                    }
                },
            }
        )


def test_threshold_planner_swaps_in_from_the_command_line() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SamplerStandIn, "model")
    cfg = parser.parse_args(
        [
            "--model.sampler=omni_blocks.sampling.MaskedDiffusionSampler",
            "--model.sampler.planner=omni_blocks.sampling.ThresholdPlanner",
            "--model.sampler.planner.threshold=0.8",
        ]
    )
    sampler = parser.instantiate(cfg).model.sampler
    assert sampler.planner == ThresholdPlanner(0.8)


def test_yaml_in_the_sampler_tutorial_builds_the_samplers() -> None:
    page = (DOCS / "tutorials" / "swap-sampler.md").read_text()
    full, swapped = (yaml.safe_load(snippet) for snippet in YAML_FENCE.findall(page))
    sampler = build_sampler(full["model"]["sampler"])
    assert sampler == MaskedDiffusionSampler(
        planner=BlockPlanner(SchedulePlanner(CosineSchedule(), 256), 64),
        scorer=EntropyScorer(),
        penalty=TailPenalty(2.0),
        choice=TokenChoice(top_p=0.9),
        guidance=ClassifierFreeGuidance(2.0),
    )
    assert build_sampler(swapped["model"]["sampler"]).planner == BlockPlanner(
        ThresholdPlanner(0.9), 64
    )


def test_readme_promises_hold() -> None:
    """The README's example is the (executed) getting-started one; its sampler YAML builds."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    example = re.search(r"^```python\n(.*?)^```", readme, re.DOTALL | re.MULTILINE)
    assert example is not None, "README.md lost its python example"
    assert example.group(1) in (root / "docs" / "getting-started.md").read_text()
    fence = re.search(r"^```yaml\n(.*?)^```", readme, re.DOTALL | re.MULTILINE)
    assert fence is not None, "README.md lost its YAML example"
    sampler = build_sampler(yaml.safe_load(fence.group(1))["model"]["sampler"])
    assert isinstance(sampler.planner, ThresholdPlanner)
    assert sampler.planner.threshold == 0.9
