"""AnimateLCM-SVD sampler against the published scheduler's formulas, written out here."""

import numpy as np
import pytest
import torch

from mimicache.errors import ConfigError
from mimicache.pipeline.schedulers import AnimateLCMSVDScheduler, SchedulerOptions, build_scheduler

SMIN, SMAX, RHO = 0.002, 700.0, 7.0


def karras(indices, train=40):
    ramp = np.asarray(indices, dtype=np.float64) / (train - 1)
    return (SMAX ** (1 / RHO) + ramp * (SMIN ** (1 / RHO) - SMAX ** (1 / RHO))) ** RHO


def scalings(sigma):
    return 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1) ** 0.5  # c_skip, c_out (sigma_data 1)


@pytest.mark.parametrize(
    "steps, indices",
    [
        (1, [0]),
        (2, [0, 20]),
        (3, [0, 13, 26]),  # 40 // 3 = 13: the tail of the table is never visited
        (4, [0, 10, 20, 30]),
        (7, [0, 5, 10, 15, 20, 25, 30]),
        (40, list(range(40))),
    ],
)
def test_sigma_table_ends_at_zero(steps, indices):
    sched = build_scheduler(SchedulerOptions(name="AnimateLCM_SVD"))
    assert isinstance(sched, AnimateLCMSVDScheduler)
    assert sched.init_noise_sigma == pytest.approx((SMAX**2 + 1) ** 0.5)
    sched.set_timesteps(steps)
    expected = karras(indices)
    assert sched.sigmas.dtype == torch.float32 and len(sched.sigmas) == steps + 1
    assert torch.equal(sched.sigmas, torch.from_numpy(np.append(expected, 0).astype(np.float32)))
    assert sched.sigmas[-1].item() == 0.0
    assert sched.timesteps.dtype == torch.float64
    np.testing.assert_array_equal(sched.timesteps.numpy(), 0.25 * np.log(expected + 1e-44))


def test_steps_follow_the_published_formulas():
    sched = AnimateLCMSVDScheduler()
    sched.set_timesteps(4)
    sigmas = torch.from_numpy(np.append(karras([0, 10, 20, 30]), 0).astype(np.float32))
    shape = (1, 3, 4, 2, 3)
    draws = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=draws) * sigmas[0]
    outputs = [torch.randn(shape, generator=draws) for _ in range(4)]

    ours_gen, ref_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ref = x.clone()
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(x, t)
        torch.testing.assert_close(scaled, ref / (sigmas[i] ** 2 + 1) ** 0.5, rtol=0, atol=0)
        x = sched.step(outputs[i], t, x, generator=ours_gen).prev_sample
        c_skip, c_out = scalings(sigmas[i])
        denoised = c_out * outputs[i] + c_skip * ref
        noise = torch.randn(shape, generator=ref_gen)  # drawn on every step, the last too
        if i < 3:
            ref = denoised + noise * sigmas[i + 1]
            torch.testing.assert_close(x, ref, rtol=0, atol=0)
        else:
            assert torch.equal(x, denoised)  # the last step returns the estimate as it is
    assert sched.step_index == 4
    # both generators made the same four draws
    assert torch.equal(torch.randn(3, generator=ours_gen), torch.randn(3, generator=ref_gen))


def test_single_step_draws_nothing_and_returns_the_estimate():
    sched = AnimateLCMSVDScheduler()
    sched.set_timesteps(1)
    x, out = torch.full((1, 1, 4, 2, 2), 3.0), torch.full((1, 1, 4, 2, 2), -0.5)
    gen = torch.Generator().manual_seed(0)
    prev = sched.step(out, sched.timesteps[0], x, generator=gen).prev_sample
    c_skip, c_out = scalings(sched.sigmas[0])
    assert torch.equal(prev, c_out * out + c_skip * x)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())


@pytest.mark.parametrize("steps", [1, 4])
def test_clip_denoised_bounds_the_final_latents(steps):
    sched = AnimateLCMSVDScheduler(clip_denoised=True)
    sched.set_timesteps(steps)
    x = torch.full((1, 2, 4, 2, 2), 50.0)
    gen = torch.Generator().manual_seed(0)
    for t in sched.timesteps:
        x = sched.step(torch.full_like(x, -1000.0), t, x, generator=gen).prev_sample
    # each estimate is clipped to [-1, 1]; with no noise on the last step so is the result
    assert torch.equal(x, torch.ones_like(x))


def test_s_noise_scales_noise_except_on_the_last_step():
    def run(s_noise, seed):
        sched = AnimateLCMSVDScheduler(s_noise=s_noise)
        sched.set_timesteps(2)
        x = torch.full((1, 1, 4, 2, 2), 2.0)
        gen = torch.Generator().manual_seed(seed)
        first = sched.step(torch.zeros_like(x), sched.timesteps[0], x, generator=gen).prev_sample
        last = sched.step(torch.zeros_like(x), sched.timesteps[1], first, generator=gen)
        return first, last.prev_sample

    (a0, a1), (b0, b1) = run(0.0, 1), run(0.0, 2)
    assert torch.equal(a0, b0) and torch.equal(a1, b1)  # no noise at all: seed-independent
    noise = torch.randn((1, 1, 4, 2, 2), generator=torch.Generator().manual_seed(1))
    sigma1 = torch.tensor(karras([20])[0], dtype=torch.float32)
    for s_noise in (1.0, 2.0, -1.0):
        first, last = run(s_noise, 1)
        torch.testing.assert_close(first, a0 + noise * s_noise * sigma1)
        c_skip, c_out = scalings(sigma1)
        # zero model output: the last step returns c_skip·x, whatever s_noise is
        assert torch.equal(last, c_out * torch.zeros_like(first) + c_skip * first)


@pytest.mark.parametrize("train", [1, 0, -3])
def test_too_few_training_steps_is_a_config_error(train):
    with pytest.raises(ConfigError, match=r"lcm_num_train_timesteps=-?\d+ must be at least 2"):
        build_scheduler(SchedulerOptions(name="AnimateLCM_SVD", num_train_timesteps=train))


def test_two_training_steps_span_sigma_max_to_sigma_min():
    sched = AnimateLCMSVDScheduler(num_train_timesteps=2)
    sched.set_timesteps(2)
    np.testing.assert_allclose(sched.sigmas.numpy(), [SMAX, SMIN, 0.0], rtol=1e-6)


@pytest.mark.parametrize("steps", [0, 41])
def test_steps_outside_the_training_range_are_a_config_error(steps):
    sched = AnimateLCMSVDScheduler()
    with pytest.raises(ConfigError, match=r"1\.\.40 inference steps"):
        sched.set_timesteps(steps)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_s_noise_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"scheduler_s_noise=(inf|nan) must be a finite number"):
        build_scheduler(SchedulerOptions(name="AnimateLCM_SVD", s_noise=value))
