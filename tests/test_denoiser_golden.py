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


def assert_close_up_to_level_flips(actual, expected):
    """Equal within rtol/atol except on <= 0.1 % of pixels, which may be off by at most one 8-bit level (a quantised D
    on a level boundary; a continuous x downstream of it is off by at most that level too)."""
    assert actual.shape == expected.shape
    diff = (actual - expected).abs()
    off = diff > ATOL + RTOL * expected.abs()
    assert off.float().mean().item() <= MAX_FLIPPED, f"{off.sum().item()} pixels differ"
    assert diff.max().item() <= LEVEL + ATOL, f"max diff {diff.max().item()}"


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
    for x, x_ref in zip(trajectory, ref["trajectory"]):
        assert_close_up_to_level_flips(x, x_ref)


def test_karras_sigmas(golden_outputs):
    for num_steps, ref in golden_outputs["karras_sigmas"].items():
        torch.testing.assert_close(karras_sigmas(int(num_steps)), ref, rtol=RTOL, atol=ATOL)
