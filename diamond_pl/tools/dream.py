"""`python -m diamond_pl dream --ckpt_path PATH [--horizon 50] [--out rollout.gif] [--policy | --actions 0,1,1,...]`

Shows what the world model imagines next to what really happens, from the same real start and with the same actions:

* Live (default): play the agent's policy for `--start-step` steps in the real test env (seeded by `--seed`) to get a
  real context (the last 4 frames). Then imagine `--horizon` steps in the world model (diffusion sampler + reward/end
  model), driven by the policy acting on the *imagined* frames (`--policy`, default; its LSTM state carries over from
  the real steps) or by a fixed action sequence (`--actions`, indices or names such as FIRE, cycled when shorter than
  the horizon). The real env, still at the start state, then replays exactly the actions the imagination used.
  Left panel: imagination. Right panel: the real game under the same actions. If the real game ends first, its last
  frame stays up, marked "game over".
* Recorded (`--data-dir DIR`, a store folder such as `<run_dir>/dataset/test`): the context is a stored episode's
  frames at `--start-step`, imagination follows the episode's *recorded* actions (open loop), and the right panel shows
  the recorded frames. The emulator state of a recorded episode is not stored, so other actions could not be replayed;
  `--policy` / `--actions` are refused in this mode.

Imagined rewards and ends are *sampled* from the reward/end model, as in training; an imagined end is marked and the
rollout continues (the model can keep generating past it). The animation has horizon + 1 frames (the first is the
real start frame on both sides): GIF with Pillow, or MP4 if `--out` ends in .mp4 and imageio-ffmpeg is installed.
`--denoising-trajectory OUT.png` saves, for one imagined step, the sampler's frames from the initial noise to the
final frame, next to the real frame.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from diamond_pl.tools.common import ToolError, load_tool_agent, pick_device, run_tool, tool_parser

if TYPE_CHECKING:
    from diamond_pl.envs.base import PixelEnv
    from diamond_pl.modules.actor_critic import ActorCriticPolicy
# torch, the emulator and the networks are imported inside the functions that use them: `dream --help` stays fast

COMMAND = "dream"
DEFAULT_LIVE_START = 20
DEFAULT_PANEL_PX = 256  # default width of a frame in the animation


def parser() -> argparse.ArgumentParser:
    p = tool_parser(
        COMMAND,
        "Imagine a rollout in the world model and save it next to the real one (left: imagined, right: "
        "real, same start and actions).",
        seeds="the real env, the policy and the sampler noise",
    )  # fmt: skip
    p.add_argument("--horizon", type=int, default=50, help="imagined steps")
    p.add_argument("--out", type=Path, default=Path("rollout.gif"), help="animation to write (.gif, or .mp4)")
    drive = p.add_mutually_exclusive_group()
    drive.add_argument("--policy", action="store_true", help="the agent's policy acts on the imagined frames (default)")
    drive.add_argument("--actions", default=None,
                       help="comma-separated actions (indices or names, e.g. 1,3,FIRE,LEFT), cycled over the horizon")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="take the start and the real side from a stored episode (e.g. RUN/dataset/test) instead of "
                        "playing the real env; imagination then follows the recorded actions")  # fmt: skip
    p.add_argument("--episode", type=int, default=None, help="with --data-dir: episode id (default: the longest)")
    p.add_argument("--start-step", type=int, default=None,
                   help=f"step of the real episode where imagination starts (default: {DEFAULT_LIVE_START} live, "
                        f"n - 1 = 3 with --data-dir)")  # fmt: skip
    p.add_argument("--denoising-trajectory", type=Path, default=None, metavar="OUT.png",
                   help="also save the denoising trajectory of one imagined step as a PNG strip")
    p.add_argument("--trajectory-step", type=int, default=0,
                   help="which imagined step (0-based) --denoising-trajectory shows")
    p.add_argument("--scale", type=int, default=None,
                   help="pixel upscaling of the frames (default: 256 px wide, 4x for 64 px frames)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second of the animation")
    return p


@dataclass
class Start:
    """A real context and what really followed it (filled later in live mode)."""

    obs: np.ndarray  # uint8 (n, 3, H, W)
    act: np.ndarray  # int64 (n,): actions between the context frames; the last slot is overwritten
    description: str
    mask: np.ndarray | None = None  # bool (n,): False on padding frames (a start within the first n - 1 steps)
    real_frames: list[np.ndarray] = field(default_factory=list)  # recorded mode: frames after the start
    real_rewards: list[float] = field(default_factory=list)
    real_actions: list[int] = field(default_factory=list)


def parse_actions(text: str, meanings: list[str]) -> list[int]:
    """'1,FIRE, left' -> action indices; names match the game's minimal action set, case-insensitively."""
    lookup = {m.lower(): i for i, m in enumerate(meanings)}
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item.lstrip("-").isdigit():
            a = int(item)
            if not 0 <= a < len(meanings):
                raise ToolError(f"--actions: action {a} is out of range; this game has actions 0..{len(meanings) - 1} "
                                f"({', '.join(f'{i}={m}' for i, m in enumerate(meanings))})")
        elif item.lower() in lookup:
            a = lookup[item.lower()]
        else:
            raise ToolError(f"--actions: unknown action {item!r}; this game's actions are "
                            f"{', '.join(f'{i}={m}' for i, m in enumerate(meanings))}")
        out.append(a)
    if not out:
        raise ToolError("--actions is empty; give at least one action, e.g. --actions 0,1")
    return out


def live_start(env: PixelEnv, actor: ActorCriticPolicy, n: int, start_step: int, seed: int | None) -> Start:
    """Play the policy for `start_step` steps; the env stays at that state for the replay."""
    import torch

    from diamond_pl.frames import uint8_to_float

    if start_step < n - 1:
        raise ToolError(f"--start-step must be >= {n - 1}: the world model needs {n} real frames of context")
    obs = env.reset(seed=seed)
    frames, actions = [obs[0]], []
    for t in range(start_step):
        a, _, _ = actor.act_on_frame(uint8_to_float(torch.from_numpy(obs[0])))
        step = env.step(np.array([a]))
        if step.end[0] or step.trunc[0]:
            raise ToolError(f"the real episode ended after {t + 1} steps, before --start-step {start_step}; "
                            f"choose an earlier start or another --seed")
        obs = step.obs
        frames.append(obs[0])
        actions.append(a)
    return Start(obs=np.stack(frames[-n:]), act=np.array(actions[len(actions) - (n - 1):] + [0], dtype=np.int64),
                 description=f"live test env, seed {seed}, start step {start_step}")


def recorded_start(data_dir: Path, episode: int | None, start_step: int | None, horizon: int, n: int) -> Start:
    from diamond_pl.data.episode import EpisodeFileError
    from diamond_pl.data.store import EpisodeStore

    try:
        store = EpisodeStore.import_directory(data_dir, "dataset", read_only=True)
    except EpisodeFileError as e:
        raise ToolError(f"--data-dir {data_dir}: {e}") from None
    if episode is None:
        episode = int(np.argmax(store.lengths))
    if not 0 <= episode < len(store):
        raise ToolError(f"--episode {episode}: {data_dir} holds episodes 0..{len(store) - 1}")
    ep = store.get(episode)
    t = n - 1 if start_step is None else start_step
    # real frames after the start: obs[t+1:], then final_obs if the episode finished
    available = ep.length - 1 - t + (1 if ep.final_obs is not None else 0)
    if t < 0 or available < horizon:
        raise ToolError(f"episode {episode} of {data_dir} has {ep.length} steps: need 0 <= --start-step and "
                        f"--start-step + --horizon <= {ep.length - 1 + (ep.final_obs is not None)} "
                        f"(got {t} + {horizon})")
    seg = store.segment(episode, t - n + 1, t + 1)  # left-padded with zeros (mid-gray after conversion) if t < n-1
    frames = list(ep.obs[t + 1 : t + 1 + horizon])
    if len(frames) < horizon:
        frames.append(ep.final_obs)
    return Start(obs=seg.obs.copy(), act=seg.act.copy(), mask=seg.mask_padding.copy(),
                 description=f"{data_dir} episode {episode}, start step {t}",
                 real_frames=frames, real_rewards=[float(r) for r in ep.rew[t : t + horizon]],
                 real_actions=[int(a) for a in ep.act[t : t + horizon]])


def dream(args: argparse.Namespace) -> dict:
    import torch

    from diamond_pl.frames import uint8_to_float
    from diamond_pl.modules.actor_critic import ActorCriticPolicy
    from diamond_pl.tools.imagined_env import ImaginedEnv
    from diamond_pl.video import check_mp4_support, compose, save_animation, save_strip, to_uint8

    if args.horizon < 1:
        raise ToolError(f"--horizon must be >= 1, got {args.horizon}")
    if (args.scale is not None and args.scale < 1) or args.fps <= 0:
        raise ToolError("--scale must be >= 1 and --fps > 0")
    recorded = args.data_dir is not None
    if recorded and (args.policy or args.actions is not None):
        raise ToolError("--data-dir replays a recorded episode, whose emulator state is not stored: imagination "
                        "follows its recorded actions, so --policy / --actions cannot be combined with it")
    if args.denoising_trajectory is not None and not 0 <= args.trajectory_step < args.horizon:
        raise ToolError(f"--trajectory-step must be in 0..{args.horizon - 1}")
    if args.out.suffix.lower() not in (".gif", ".mp4"):
        raise ToolError(f"--out {args.out}: use a .gif (always works) or .mp4 (needs imageio-ffmpeg)")
    if args.out.suffix.lower() == ".mp4":
        check_mp4_support(args.out)  # before any slow work
    device = pick_device(args.device)
    agent = load_tool_agent(args.ckpt_path, device)
    if args.seed is not None:
        torch.manual_seed(args.seed)  # policy sampling, sampler noise, reward/end sampling
    n = agent.denoiser.num_steps_conditioning
    temperature = agent.actor_critic.loss_cfg.temperature if args.temperature is None else args.temperature
    actor = ActorCriticPolicy(agent.actor_critic.net, temperature)

    env = None if recorded else agent.env_spec.make(1, train=False, seed=args.seed)
    try:
        meanings = env.action_meanings if env is not None else agent.env_spec.action_meanings
        plan = parse_actions(args.actions, meanings) if args.actions is not None else None
        if recorded:
            start = recorded_start(args.data_dir, args.episode, args.start_step, args.horizon, n)
            plan = start.real_actions
        else:
            start_step = DEFAULT_LIVE_START if args.start_step is None else args.start_step
            start = live_start(env, actor, n, start_step, args.seed)

        # --- imagination ---
        wm = ImaginedEnv(agent)
        context = uint8_to_float(torch.from_numpy(start.obs))
        if start.mask is not None:
            context[~torch.from_numpy(start.mask)] = 0.0  # padding frames are mid-gray, as in training
        frame = wm.reset(context, torch.from_numpy(start.act))
        imagined, actions, trajectory = [], [], None
        for k in range(args.horizon):
            a = plan[k % len(plan)] if plan is not None else actor.act_on_frame(frame)[0]
            want = args.denoising_trajectory is not None and k == args.trajectory_step
            step = wm.step(a, return_trajectory=want)
            if want:
                trajectory = step.trajectory
            imagined.append(step)
            actions.append(a)
            frame = step.obs

        # --- reality, same actions from the same start ---
        if recorded:
            real = [(f, r, 0) for f, r in zip(start.real_frames, start.real_rewards)]
        else:
            real = replay(env, actions)
    finally:
        if env is not None:
            env.close()

    scale = args.scale or -(-DEFAULT_PANEL_PX // start.obs.shape[-1])  # default: room for the captions
    images = [compose([start.obs[-1], start.obs[-1]],
                      [["imagined (world model)", "t+0  real start frame"], [_real_title(recorded), "t+0"]],
                      scale)]  # fmt: skip
    for k, (s, (real_frame, real_rew, over)) in enumerate(zip(imagined, real), start=1):
        name = meanings[actions[k - 1]]
        left = ["imagined (world model)", f"t+{k}  {name}  r={s.rew:+.0f}" + ("  END" if s.end else "")]
        right = [_real_title(recorded), f"t+{k}  {name}  r={real_rew:+g}" + ("  GAME OVER" if over == 1 else "")]
        if over == 2:
            right[1] = "game over (last frame held)"
        images.append(compose([s.obs, real_frame], [left, right], scale))
    save_animation(images, args.out, args.fps)

    psnr = [psnr_uint8(to_uint8(s.obs), f) for s, (f, _, over) in zip(imagined, real) if over < 2]
    summary = {
        "game": agent.game,
        "start": start.description,
        "driven_by": "recorded actions" if recorded else ("policy" if plan is None else "--actions"),
        "actions": [int(a) for a in actions],
        "imagined_return": float(sum(s.rew for s in imagined)),
        "imagined_ends": [k for k, s in enumerate(imagined, start=1) if s.end],
        "real_return": float(sum(r for _, r, _ in real)),
        "real_game_over_at": next((k for k, (_, _, over) in enumerate(real, start=1) if over == 1), None),
        "psnr_first": psnr[0] if psnr else None,
        "psnr_mean": float(np.mean(psnr)) if psnr else None,
        "out": str(args.out),
        "num_frames": len(images),
        "size": images[0].size,
    }
    if trajectory is not None:
        sigmas = agent.denoiser.sampler.sigmas
        k = args.trajectory_step
        labels = ["initial noise"] + [f"step {i} (sigma {s:.3g})" for i, s in enumerate(sigmas[1:], start=1)]
        save_strip([*trajectory, real[k][0]], args.denoising_trajectory, [*labels, "real"], scale)
        summary["denoising_trajectory"] = str(args.denoising_trajectory)
    _print_summary(summary)
    return summary


def replay(env: PixelEnv, actions: list[int]) -> list[tuple[np.ndarray, float, int]]:
    """Step the real env with `actions` -> (frame, reward, over) per step, over = 0 while playing, 1 on the step
    that ends the game, 2 after it (the last frame is held; the env is not stepped into a new game)."""
    out, last, over = [], None, 0
    for a in actions:
        if over:
            over = 2
            out.append((last, 0.0, over))
            continue
        step = env.step(np.array([a]))
        over = int(bool(step.end[0] or step.trunc[0]))
        last = (step.final_obs if over else step.obs)[0].copy()
        out.append((last, float(step.rew[0]), over))
    return out


def _real_title(recorded: bool) -> str:
    return "real (recorded episode)" if recorded else "real (same actions)"




def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 frames (inf when equal)."""
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(torch.from_numpy(a).double(), torch.from_numpy(b).double(), data_range=255.0))


def _print_summary(s: dict) -> None:
    print(f"{s['game']}: {s['start']}; imagination driven by {s['driven_by']}")
    print(f"  imagined return (sampled reward signs) {s['imagined_return']:+g}, real return {s['real_return']:+g}")
    if s["imagined_ends"]:
        print(f"  the world model predicted an episode end at imagined step(s) {s['imagined_ends']}")
    if s["real_game_over_at"]:
        print(f"  the real game ended at step {s['real_game_over_at']}")
    if s["psnr_mean"] is not None:
        print(f"  PSNR imagined vs real: first step {s['psnr_first']:.1f} dB, mean {s['psnr_mean']:.1f} dB")
    print(f"wrote {s['out']} ({s['num_frames']} frames, {s['size'][0]}x{s['size'][1]}; left: imagined, right: real)")
    if "denoising_trajectory" in s:
        print(f"wrote {s['denoising_trajectory']}")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_tool(COMMAND, lambda: dream(args))
