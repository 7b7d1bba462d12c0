"""torchmetrics gives the numbers of the hand-written formulas it replaced; one next-frame step serves every user of
the world model; the evaluation GIF reaches TensorBoard as an animated image."""

import numpy as np
import pytest
import torch
from PIL import Image

from diamond_pl.diffusion.next_frame import imagine_open_loop, roll, sample_next_frame
from diamond_pl.modules.rew_end import IGNORE, per_class_metrics
from diamond_pl.tools.dream import psnr_uint8


def handwritten_per_class(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """The formulas used before torchmetrics (rows = true class, columns = predicted; 0 where undefined)."""
    c = confusion.double()
    tp = c.diagonal()
    precision = torch.nan_to_num(tp / c.sum(dim=0))
    recall = torch.nan_to_num(tp / c.sum(dim=1))
    f1 = torch.nan_to_num(2 * precision * recall / (precision + recall))
    return {"precision": precision.float(), "recall": recall.float(), "f1_score": f1.float()}


@pytest.mark.parametrize("case", ["random", "class_never_predicted", "class_never_true", "all_ignored_but_one"])
def test_per_class_precision_recall_f1_equal_the_confusion_matrix_formulas(case):
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (500,), generator=g)
    target = torch.randint(0, 3, (500,), generator=g)
    if case == "class_never_predicted":
        pred[pred == 2] = 0
    elif case == "class_never_true":
        target[target == 1] = 2
    target[torch.rand(500, generator=g) < (0.99 if case == "all_ignored_but_one" else 0.2)] = IGNORE
    metrics = per_class_metrics(3)
    for chunk in range(5):  # accumulated over several updates, as over an epoch
        metrics.update(pred[chunk * 100 : (chunk + 1) * 100], target[chunk * 100 : (chunk + 1) * 100])
    kept = target != IGNORE
    confusion = torch.zeros(3, 3, dtype=torch.long)
    confusion.index_put_((target[kept], pred[kept]), torch.ones(int(kept.sum()), dtype=torch.long), accumulate=True)
    got, want = metrics.compute(), handwritten_per_class(confusion)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7, msg=name)


def test_psnr_of_uint8_frames_equals_the_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    assert psnr_uint8(a, b) == pytest.approx(10 * np.log10(255.0**2 / mse), rel=1e-6)  # data range held in float32
    assert psnr_uint8(a, a) == float("inf")


def test_world_model_psnr_ssim_settings_match_the_formula():
    """DenoiserModule's metrics: frames in [-1, 1] (data range 2), PSNR of the pooled MSE over every update."""
    from diamond_pl.modules.denoiser import DATA_RANGE
    from torchmetrics.image import PeakSignalNoiseRatio

    g = torch.Generator().manual_seed(1)
    real = torch.rand(2, 4, 3, 64, 64, generator=g) * 2 - 1
    pred = (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    metric = PeakSignalNoiseRatio(data_range=DATA_RANGE)
    for p, r in zip(pred, real):
        metric.update(p, r)
    mse = ((pred.double() - real.double()) ** 2).mean()
    assert float(metric.compute()) == pytest.approx(float(10 * torch.log10(DATA_RANGE**2 / mse)), rel=1e-5)


def fake_sampler(calls: list):
    """A deterministic stand-in for the denoiser's sampler: the next frame is a function of the context."""

    def next_obs(prev_obs, prev_act, **kwargs):
        calls.append((prev_obs.clone(), prev_act.clone(), kwargs))
        frame = torch.tanh(prev_obs.mean(dim=1) + 0.1 * prev_act[:, -1, None, None, None].float())
        if kwargs.get("return_trajectory"):
            return frame, torch.stack([frame * 0, frame])
        return frame

    return next_obs


def test_sample_next_frame_rolls_the_context():
    obs, act = torch.randn(2, 4, 3, 8, 8), torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    calls = []
    frame, context, trajectory = sample_next_frame(fake_sampler(calls), obs, act, generator="g")
    assert calls[0][2] == {"generator": "g"} and trajectory is None
    torch.testing.assert_close(context, torch.cat((obs[:, 1:], frame[:, None]), dim=1))
    _, _, trajectory = sample_next_frame(fake_sampler(calls), obs, act, return_trajectory=True)
    assert trajectory.shape == (2, 2, 3, 8, 8)
    torch.testing.assert_close(roll(act, torch.tensor([7, 8])), torch.tensor([[1, 2, 3, 7], [2, 1, 0, 8]]))


def test_imagine_open_loop_equals_the_step_by_step_loop():
    """The loop the world-model metrics and the evaluation GIF used to write out themselves."""
    n, k = 4, 5
    obs, act = torch.randn(3, n, 3, 8, 8), torch.randint(0, 4, (3, n + k - 1))
    got = imagine_open_loop(fake_sampler([]), obs, act)
    context, want, fn = obs, [], fake_sampler([])
    for step in range(k):
        pred = fn(context, act[:, step : step + n])
        want.append(pred)
        context = torch.cat((context[:, 1:], pred[:, None]), dim=1)
    torch.testing.assert_close(got, torch.stack(want, dim=1))


def test_log_gif_writes_an_animated_image_summary(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from diamond_pl.loop.evaluation import side_by_side
    from diamond_pl.video import log_gif

    logger = TensorBoardLogger(tmp_path, name="run")
    clip = torch.rand(3, 3, 64, 64) * 2 - 1
    images = side_by_side(clip, -clip, scale=2)
    assert log_gif(logger, "imagination/real_vs_imagined", images, step=7)
    logger.experiment.close()
    assert not log_gif(logger, "closed", images, step=8)  # a closed writer is left alone
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    acc.Reload()
    (event,) = acc.Images("imagination/real_vs_imagined")
    assert event.step == 7
    import io

    with Image.open(io.BytesIO(event.encoded_image_string)) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (event.width, event.height)
