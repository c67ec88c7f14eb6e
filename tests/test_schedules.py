from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from omni_blocks.schedules import (
    AntitheticTime,
    CosineSchedule,
    FullMaskShareTime,
    GeometricSchedule,
    LinearSchedule,
    LogLinearSchedule,
    MaskGITPowerSchedule,
    NoiseSchedule,
    PolynomialSchedule,
    TimeDistribution,
    UniformTime,
    check_times,
)

# (schedule, alpha(0), alpha(1)) for fixed instances; hypothesis adds parametrised ones below.
ENDPOINTS: list[tuple[NoiseSchedule, float, float]] = [
    (LinearSchedule(), 1.0, 0.0),
    (CosineSchedule(), 1.0, 0.0),
    (PolynomialSchedule(2.0), 1.0, 0.0),
    (PolynomialSchedule(0.5), 1.0, 0.0),
    (MaskGITPowerSchedule(2.0), 1.0, 0.0),
    (MaskGITPowerSchedule(0.5), 1.0, 0.0),
    (LogLinearSchedule(1e-3), 1.0, 1e-3),
    (LogLinearSchedule(0.0), 1.0, 0.0),
    (GeometricSchedule(), math.exp(-1e-4), math.exp(-20.0)),
]
SCHEDULES = [s for s, _, _ in ENDPOINTS]
IDS = [repr(s) for s in SCHEDULES]

schedules = st.one_of(
    st.sampled_from(SCHEDULES),
    st.builds(PolynomialSchedule, st.floats(0.2, 5.0)),
    st.builds(MaskGITPowerSchedule, st.floats(0.2, 5.0)),
    st.builds(LogLinearSchedule, st.floats(0.0, 0.5)),
    st.builds(GeometricSchedule, st.floats(1e-5, 1e-2), st.floats(5.0, 30.0)),
)
times = st.floats(0.0, 1.0, allow_nan=False, width=32)


@pytest.mark.parametrize(("schedule", "at0", "at1"), ENDPOINTS, ids=IDS)
def test_endpoints(schedule: NoiseSchedule, at0: float, at1: float) -> None:
    ends = schedule.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert float(ends[0]) == pytest.approx(at0, abs=1e-12)
    assert float(ends[1]) == pytest.approx(at1, abs=1e-12)
    assert isinstance(schedule, NoiseSchedule)


@given(schedules, st.lists(times, min_size=2, max_size=30))
def test_alpha_is_a_monotone_probability(schedule: NoiseSchedule, ts: list[float]) -> None:
    t = torch.tensor(sorted(ts), dtype=torch.float64)
    alpha = schedule.alpha(t)
    assert bool(((alpha >= 0) & (alpha <= 1)).all())
    assert bool((alpha[1:] <= alpha[:-1] + 1e-12).all())
    torch.testing.assert_close(schedule.mask_prob(t), 1 - alpha, atol=1e-12, rtol=0)
    assert bool((schedule.alpha_derivative(t[t < 1]) <= 0).all())


@given(schedules, st.floats(0.02, 0.98))
def test_derivative_and_elbo_weight_match_their_definitions(
    schedule: NoiseSchedule, t0: float
) -> None:
    h = 1e-6
    t = torch.tensor([t0 - h, t0, t0 + h], dtype=torch.float64)
    alpha = schedule.alpha(t)
    numeric = (alpha[2] - alpha[0]) / (2 * h)
    analytic = schedule.alpha_derivative(t)[1]
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-4, abs=1e-6)
    weight = schedule.elbo_weight(t)[1]
    expected = -analytic / (1 - alpha[1])
    assert float(weight) == pytest.approx(float(expected), rel=1e-6)
    assert float(weight) >= 0


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_elbo_weight_integrates_to_total_masking(schedule: NoiseSchedule) -> None:
    # int_0^1 w(t) (1 - alpha(t)) dt = alpha(0) - alpha(1): the identity that makes the
    # ELBO-weighted loss of a t-independent model equal its mean token NLL.
    n = 200_000
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    integral = float((schedule.elbo_weight(t) * schedule.mask_prob(t)).mean())
    ends = schedule.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert integral == pytest.approx(float(ends[0] - ends[1]), rel=1e-3)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_times_outside_unit_interval_raise(schedule: NoiseSchedule, bad: float) -> None:
    for method in (
        schedule.alpha,
        schedule.mask_prob,
        schedule.alpha_derivative,
        schedule.elbo_weight,
    ):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            method(torch.tensor([0.5, bad]))


def test_check_times_names_the_problem() -> None:
    with pytest.raises(ValueError, match="float tensor"):
        check_times(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"max 2\.0"):
        check_times(torch.tensor([0.5, 2.0]))
    check_times(torch.tensor([]))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: PolynomialSchedule(0.0), "exponent"),
        (lambda: MaskGITPowerSchedule(-1.0), "exponent"),
        (lambda: LogLinearSchedule(1.0), "eps"),
        (lambda: LogLinearSchedule(-0.1), "eps"),
        (lambda: GeometricSchedule(1.0, 0.5), "sigma_max"),
        (lambda: GeometricSchedule(0.0, 1.0), "sigma_min"),
        (lambda: UniformTime(1.0), "eps"),
        (lambda: AntitheticTime(-0.5), "eps"),
        (lambda: FullMaskShareTime(1.5), "share"),
        (lambda: FullMaskShareTime(0.5, eps=1.0), "eps"),
    ],
)
def test_bad_parameters_raise(factory: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()  # type: ignore[operator]


# ---------------------------------------------------------------------------------- time samplers

SAMPLERS: list[TimeDistribution] = [
    UniformTime(),
    UniformTime(0.1),
    AntitheticTime(),
    AntitheticTime(0.05, shuffle=True),
    FullMaskShareTime(),
    FullMaskShareTime(1.0),
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_time_distributions_respect_eps_and_are_reproducible(
    sampler: UniformTime | AntitheticTime, n: int, seed: int
) -> None:
    assert isinstance(sampler, TimeDistribution)
    t = sampler.sample(n, generator=torch.Generator().manual_seed(seed))
    assert t.shape == (n,) and t.dtype == torch.float32
    assert bool((t >= sampler.eps).all()) and bool((t < 1).all())
    again = sampler.sample(n, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(t, again)


@given(n=st.integers(1, 300), seed=st.integers(0, 2**31), shuffle=st.booleans())
def test_antithetic_sampler_puts_one_time_in_each_stratum(n: int, seed: int, shuffle: bool) -> None:
    eps = 0.01
    sampler = AntitheticTime(eps, shuffle=shuffle)
    t = sampler.sample(n, generator=torch.Generator().manual_seed(seed)).double()
    scaled = (t - eps) / (1 - eps) * n  # stratum i is [i, i + 1) on this scale
    # float32 rounding may put a draw a hair outside its stratum: allow 1e-3
    lower = torch.arange(n, dtype=torch.float64) - 1e-3
    assert bool((torch.sort(scaled).values >= lower).all())
    assert bool((torch.sort(scaled).values <= lower + 1 + 2e-3).all())
    if not shuffle:
        assert bool((scaled >= lower).all()) and bool((scaled <= lower + 1 + 2e-3).all())


def test_uniform_sampler_is_uniform_and_antithetic_has_lower_variance() -> None:
    g = torch.Generator().manual_seed(1)
    uniform = torch.stack([UniformTime(0.0).sample(16, generator=g).mean() for _ in range(400)])
    anti = torch.stack([AntitheticTime(0.0).sample(16, generator=g).mean() for _ in range(400)])
    assert float(uniform.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(anti.mean()) == pytest.approx(0.5, abs=0.005)
    # batch means of stratified draws vary n times less in std: 1/sqrt(12 n) vs 1/(n sqrt(12))
    assert float(anti.std()) < float(uniform.std()) / 3


@pytest.mark.parametrize("bad", [0, -3])
def test_time_distribution_rejects_bad_batch_size(bad: int) -> None:
    for sampler in (UniformTime(), AntitheticTime()):
        with pytest.raises((ValueError, TypeError), match="batch_size"):
            sampler.sample(bad)


def test_full_mask_share_puts_that_share_of_rows_at_the_fully_masked_end() -> None:
    t = FullMaskShareTime(0.3).sample(20_000, generator=torch.Generator().manual_seed(0))
    full = t > 0.9999
    assert float(full.float().mean()) == pytest.approx(0.3, abs=0.015)
    rest = t[~full]  # the others stay uniform on [eps, 1)
    assert float(rest.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(LinearSchedule().mask_prob(t[full]).min()) > 0.9999
    none = FullMaskShareTime(0.0).sample(1000, generator=torch.Generator().manual_seed(0))
    assert not bool((none > 0.9999).any())
