"""The denoiser, its EDM preconditioning and the sampler reproduce the reference implementation's outputs
(../shared/golden/diamond_small, README there for the tolerances)."""

import pytest
import torch

from diamond_pl.diffusion.edm import Denoiser
from diamond_pl.diffusion.sampler import karras_sigmas, sample_next_obs
from diamond_pl.nets.denoiser_net import DenoiserNet, DenoiserNetConfig

pytestmark = pytest.mark.golden

RTOL = ATOL = 1e-4
LEVEL = 2 / 255  # one 8-bit level in [-1, 1]
MAX_FLIPPED = 1e-3  # fraction of pixels allowed one level off (values on a level boundary)


@pytest.fixture(scope="module")
def denoiser(golden_config, golden_state_dict):
    c = golden_config["denoiser"]
    cfg = DenoiserNetConfig(
        num_actions=golden_config["num_actions"],
        img_channels=c["img_channels"],
        num_steps_conditioning=c["num_steps_conditioning"],
        cond_channels=c["cond_channels"],
        depths=tuple(c["depths"]),
        channels=tuple(c["channels"]),
        attn_depths=tuple(c["attn_depths"]),
    )
    den = Denoiser(DenoiserNet(cfg), golden_config["sigma_data"], golden_config["sigma_offset_noise"])
    prefix = "denoiser."
    state = {k[len(prefix) :]: v for k, v in golden_state_dict.items() if k.startswith(prefix)}
    den.load_state_dict(state, strict=True)
    return den.eval()


def assert_close_up_to_level_flips(actual, expected, gain: float = 1.0):
    """Equal within rtol/atol except on <= 0.1 % of pixels, which may be off by at most one 8-bit level (a quantised D
    on a level boundary, which another thread count or kernel can put on the other side).

    `gain` is how much the step that produced `actual` multiplies a change of its D evaluations (`step_gains`): the
    comparison is then made in D-space, i.e. the difference divided by the gain must meet the rule above."""
    assert actual.shape == expected.shape
    diff = (actual - expected).abs() / gain
    off = diff > ATOL + RTOL * expected.abs() / gain
    assert off.float().mean().item() <= MAX_FLIPPED, f"{off.sum().item()} pixels differ"
    assert diff.max().item() <= LEVEL + ATOL, f"max diff {diff.max().item() * gain} (gain {gain:.4g})"


def step_gains(sigmas, order: int) -> list[float]:
    """For each entry of the sampler's trajectory, the factor by which a change of the D values it depends on moves x.

    Step sigma -> sigma_next with dt = sigma_next - sigma: Euler x + (x - D) / sigma * dt moves by |dt| / sigma per
    unit of D; Heun x + ((x - D) / sigma + (x' - D') / sigma_next) / 2 * dt by |dt| / (2 sigma) for D and
    |dt| / (2 sigma_next) for D'. So with the schedule [5, 0.002, 0], one 8-bit level (2/255) flipped in D' at
    sigma 0.002 moves the intermediate x by 2/255 * 4.998 / 0.004 = 9.8 (reported with 2 threads at paper size),
    while the last (Euler, to sigma 0) step lands on D itself (gain 1). Never below 1: the x terms carry float noise."""
    sigmas = [float(s) for s in sigmas]
    gains = [1.0]  # the initial noise is given
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        dt = abs(sigma_next - sigma)
        gain = dt / (2 * sigma) + dt / (2 * sigma_next) if order == 2 and sigma_next > 0 else dt / sigma
        gains.append(max(1.0, gain))
    return gains


def test_conditioners(denoiser, golden_outputs):
    ref = golden_outputs["conditioners"]
    cs = denoiser.conditioners(ref["sigma"])
    for name in ("c_in", "c_out", "c_skip", "c_noise"):
        torch.testing.assert_close(getattr(cs, name), ref[name], rtol=RTOL, atol=ATOL, msg=name)


def test_inner_model_and_denoised(denoiser, golden_outputs):
    ref = golden_outputs["denoiser"]
    args = (ref["noisy_next_obs"], ref["sigma"], ref["prev_obs"], ref["prev_act"])
    with torch.no_grad():
        out, _ = denoiser.model_output(*args)
        denoised = denoiser.denoise(*args)
    torch.testing.assert_close(out, ref["inner_model_output"], rtol=RTOL, atol=ATOL)
    assert_close_up_to_level_flips(denoised, ref["denoised_quantised"])


@pytest.mark.parametrize("name, order", [("sampler_euler3", 1), ("sampler_heun2", 2)])
def test_sampler(denoiser, golden_outputs, name, order):
    ref, cond = golden_outputs[name], golden_outputs["denoiser"]
    num_steps = len(ref["sigmas"]) - 1
    torch.testing.assert_close(karras_sigmas(num_steps), ref["sigmas"], rtol=RTOL, atol=ATOL)
    sample, trajectory = sample_next_obs(
        denoiser,
        cond["prev_obs"],
        cond["prev_act"],
        num_steps=num_steps,
        order=order,
        initial_noise=ref["initial_noise"],
        return_trajectory=True,
    )
    assert_close_up_to_level_flips(sample, ref["sample"])
    assert trajectory.shape == ref["trajectory"].shape
    for x, x_ref, gain in zip(trajectory, ref["trajectory"], step_gains(ref["sigmas"], order)):
        assert_close_up_to_level_flips(x, x_ref, gain)


def test_step_gains_of_the_paper_schedules():
    assert step_gains(karras_sigmas(2), 2)[1] * LEVEL == pytest.approx(9.8, abs=0.01)  # the 2-thread case
    assert step_gains(karras_sigmas(2), 2)[2] == 1.0 == step_gains(karras_sigmas(3), 1)[-1]
    assert step_gains(karras_sigmas(3), 1) == [1.0, 1.0, 1.0, 1.0]  # Euler: |dt| / sigma <= 1


class FlipOneLevel(torch.nn.Module):
    """The golden denoiser, except that D at sigma 0.002 is one 8-bit level higher on one pixel: what a different
    thread count does to a value on a level boundary."""

    def __init__(self, denoiser):
        super().__init__()
        self.inner = denoiser

    def denoise(self, x, sigma, prev_obs, prev_act):
        d = self.inner.denoise(x, sigma, prev_obs, prev_act)
        if abs(float(sigma) - 0.002) < 1e-6:
            d = d.clone()
            d[0, 0, 10, 10] += LEVEL
        return d


def test_heun_intermediate_tolerates_one_flipped_level_but_not_a_wrong_step(denoiser, golden_outputs):
    ref, cond = golden_outputs["sampler_heun2"], golden_outputs["denoiser"]
    gains = step_gains(ref["sigmas"], 2)

    def run(den):
        return sample_next_obs(den, cond["prev_obs"], cond["prev_act"], num_steps=2, order=2,
                               initial_noise=ref["initial_noise"], return_trajectory=True)[1]  # fmt: skip

    flipped = run(FlipOneLevel(denoiser))
    assert (flipped[1] - ref["trajectory"][1]).abs().max() > 9  # a plain comparison of x would fail here
    assert_close_up_to_level_flips(flipped[1], ref["trajectory"][1], gains[1])
    # a wrong Heun step (the second slope only) is still caught, however large the gain
    with torch.no_grad():
        x0, (s0, s1) = ref["initial_noise"], (float(ref["sigmas"][0]), float(ref["sigmas"][1]))
        d0 = (x0 - denoiser.denoise(x0, s0, cond["prev_obs"], cond["prev_act"])) / s0
        x_euler = x0 + d0 * (s1 - s0)
        d1 = (x_euler - denoiser.denoise(x_euler, s1, cond["prev_obs"], cond["prev_act"])) / s1
    with pytest.raises(AssertionError):
        assert_close_up_to_level_flips(x0 + d1 * (s1 - s0), ref["trajectory"][1], gains[1])
    with pytest.raises(AssertionError):  # nor is an Euler step in place of Heun
        assert_close_up_to_level_flips(x_euler, ref["trajectory"][1], gains[1])


def test_karras_sigmas(golden_outputs):
    for num_steps, ref in golden_outputs["karras_sigmas"].items():
        torch.testing.assert_close(karras_sigmas(int(num_steps)), ref, rtol=RTOL, atol=ATOL)
