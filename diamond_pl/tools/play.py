"""`python -m diamond_pl play --ckpt_path PATH [--size 640] [--fps 15] [--no-header] [--horizon 50] [-r DIR]`
`python -m diamond_pl play -d DIR [DIR ...] [--game GAME]`

Play inside the world model (or the real game) in a pygame window, as DIAMOND's play mode (reference spec §15.2).
Keys (printed at start with this game's action mapping): W/A/S/D + Space and their combinations = the game's actions;
Enter = reset; m = human/policy control; Up/Down = imagination horizon; Left/Right = world model / real test env /
real train env; . = pause; e = one step while paused; Escape = quit. `-r DIR` records every finished episode.

Dataset mode (`-d`, spec §15.3) shows stored episodes frame by frame instead and needs no checkpoint.

pygame is optional: `pip install "diamond-pl[play]"`. The controls' logic lives in `play_controls.py`, the
environments in `play_session.py`, recording in `play_record.py` and dataset mode in `play_dataset.py`; this file only
draws and reads keys.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from diamond_pl.tools.common import ToolError, load_tool_agent, pick_device, run_tool, tool_parser

if TYPE_CHECKING:
    from diamond_pl.tools.play_dataset import DatasetBrowser
# torch and the replay store are imported where they are used: `play --help` must not wait for torch
from diamond_pl.tools.play_controls import (
    ACTION_KEYS,
    ENVS,
    PlayState,
    action_from_keys,
    action_key_map,
    describe_mapping,
)

COMMAND = "play"
HEADER_PX = 150
INSTALL_HINT = 'play needs pygame, an optional extra: pip install "diamond-pl[play]" (or pip install "pygame>=2.5")'


def parser() -> argparse.ArgumentParser:
    p = tool_parser(
        COMMAND,
        "Play inside the world model or the real game (needs pygame: pip install \"diamond-pl[play]\").",
        seeds="the real envs, the context draws and torch",
        ckpt_required=False,  # dataset mode needs none; play mode checks for it
    )  # fmt: skip
    p.add_argument("--size", type=int, default=640, help="frame size in pixels (rounded down to a multiple of 64)")
    p.add_argument("--fps", type=float, default=15.0, help="target frames (= env steps) per second")
    p.add_argument("--no-header", action="store_true", help="no text header above the frame")
    p.add_argument("--horizon", type=int, default=50, help="imagined episode length before truncation")
    p.add_argument("-n", "--num-steps-initial-collect", type=int, default=1000,
                   help="real steps played by the policy to draw world-model starting contexts from")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="draw world-model contexts from this store folder (e.g. RUN/dataset/train) instead")
    p.add_argument("--env", choices=ENVS, default="wm", help="environment to start in")
    p.add_argument("--policy", action="store_true", help="start with the policy in control")
    p.add_argument("--max-frames", type=int, default=None, help="quit after this many frames (demos, tests)")
    p.add_argument("-r", "--record", type=Path, default=None, metavar="DIR",
                   help="append every finished episode to DIR/rec_<env>_<human|policy>/ (an episode store)")
    p.add_argument("-d", "--dataset", type=Path, nargs="+", default=None, metavar="DIR",
                   help="dataset mode: browse the episode stores in or below these folders (no checkpoint needed)")
    p.add_argument("--game", default=None, help="dataset mode: show this game's action names (default: indices)")
    return p


def import_pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        raise ToolError(INSTALL_HINT) from None
    return pygame


def run_window(session, state: PlayState, size: int = 640, fps: float = 15.0, show_header: bool = True,
               max_frames: int | None = None, on_frame: Callable[[int], None] | None = None) -> dict:
    """The pygame loop: read keys, step the session, draw. Returns counts of what happened (for tests and logs).

    `on_frame(i)` runs before frame i's events are read (tests post key events there)."""
    pygame = import_pygame()
    try:
        screen, font, header = _open_window(pygame, size, show_header, f"diamond_pl play: {session.game}")
        key_map = action_key_map(session.action_meanings)
        held: set[str] = set()
        message, message_left = None, 0
        stats = {"frames": 0, "steps": 0, "resets": 0, "episodes_ended": 0, "envs": [], "actions": [], "recorded": []}
        for events in _frames(pygame, state, stats, fps, max_frames, on_frame):
            for event in events:
                if event.type in (pygame.KEYDOWN, pygame.KEYUP):
                    name = pygame.key.name(event.key)
                    if name in ACTION_KEYS:  # held keys make up the action; tracked from events, so injected ones count
                        (held.add if event.type == pygame.KEYDOWN else held.discard)(name)
                    elif event.type == pygame.KEYDOWN:
                        text = state.handle(name)
                        if text:
                            message, message_left = text, int(max(fps, 1))
            if state.quit:
                break
            if state.need_reset:
                session.horizon = state.horizon
                session.reset(state.env)
                state.need_reset = False
                stats["resets"] += 1
                stats["envs"].append(state.env)
            elif state.should_step():
                info = session.step(action_from_keys(held, key_map) if state.human else None)
                stats["steps"] += 1
                stats["actions"].append(info.action)
                if info.done:
                    why = "truncated (horizon)" if info.trunc and not info.end else "ended"
                    message = f"episode {why} after {session.t} steps, return {session.ret:g}"
                    if session.recorder is not None:
                        stats["recorded"].append(session.last_recorded)
                        message += f", saved {session.last_recorded.parent.parent.name}/{session.last_recorded.name}"
                    message_left = int(max(fps, 1))
                    state.need_reset = True
                    stats["episodes_ended"] += 1
            lines = session.header_lines(state.human, state.paused, message if message_left > 0 else None)
            _draw(pygame, screen, font, session.frame_u8, lines, size, header)
            message_left -= 1
        return stats
    finally:
        pygame.quit()


def run_dataset_window(browser: DatasetBrowser, size: int = 640, fps: float = 15.0, show_header: bool = True,
                       max_frames: int | None = None, on_frame: Callable[[int], None] | None = None) -> dict:
    """Dataset mode's pygame loop: keys move through the stored episodes (held arrows repeat). Returns what was
    shown, for tests: `shown` lists (dataset index, episode index, t) per frame."""
    pygame = import_pygame()
    try:
        screen, font, header = _open_window(pygame, size, show_header, "diamond_pl play: dataset mode")
        pygame.key.set_repeat(300, max(1, int(1000 / fps)))  # held keys repeat, as in DIAMOND's dataset mode
        message, message_left = browser.notice, int(max(fps, 1)) if browser.notice else 0
        stats = {"frames": 0, "shown": []}
        for events in _frames(pygame, browser, stats, fps, max_frames, on_frame):
            for event in events:
                if event.type == pygame.KEYDOWN:
                    text = browser.handle(pygame.key.name(event.key))
                    if text:
                        message, message_left = text, int(max(fps, 1))
            if browser.quit:
                break
            _draw(pygame, screen, font, browser.frame, browser.header_lines(message if message_left > 0 else None),
                  size, header)
            message_left -= 1
            stats["shown"].append((browser.dataset_index, browser.episode_index, browser.t))
        return stats
    finally:
        pygame.quit()


def _frames(pygame, owner, stats: dict, fps: float, max_frames: int | None, on_frame: Callable[[int], None] | None):
    """The frame loop both windows share: yields each frame's events (a window close sets `owner.quit` first) until
    `owner.quit` or `max_frames`; after the caller's frame body it waits for the frame rate and counts the frame
    (a `break` in the body skips both)."""
    clock = pygame.time.Clock()
    while not owner.quit and (max_frames is None or stats["frames"] < max_frames):
        if on_frame is not None:
            on_frame(stats["frames"])
        events = pygame.event.get()
        if any(event.type == pygame.QUIT for event in events):
            owner.quit = True
        yield events
        clock.tick(fps)
        stats["frames"] += 1


def _open_window(pygame, size: int, show_header: bool, title: str):
    """A window of the frame (size x size) under an optional text header; returns (screen, font, header height)."""
    pygame.display.init()  # display and fonts only: no audio device is needed (or opened)
    pygame.font.init()
    header = HEADER_PX if show_header else 0
    screen = pygame.display.set_mode((size, size + header))
    pygame.display.set_caption(title)
    # 6 header lines must fit in HEADER_PX and the longest (~85 characters) in the window's width
    font = pygame.font.Font(None, max(12, min(24, size // 28))) if show_header else None
    return screen, font, header


def _draw(pygame, screen, font, frame: np.ndarray, lines: list[str], size: int, header: int) -> None:
    """Draw a uint8 (3, H, W) frame scaled to size x size (nearest neighbour) and the header lines."""
    screen.fill((0, 0, 0))
    surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(2, 1, 0)))  # (W, H, 3)
    screen.blit(pygame.transform.scale(surface, (size, size)), (0, header))
    if font is not None:
        for i, line in enumerate(lines):
            screen.blit(font.render(line, True, (235, 235, 235)), (8, 4 + i * font.get_linesize()))
    pygame.display.flip()


def play(args: argparse.Namespace) -> dict:
    import_pygame()  # fail before any slow work when pygame is missing
    size = (args.size // 64) * 64
    if size < 64:
        raise ToolError(f"--size must be at least 64, got {args.size}")
    if args.fps <= 0 or args.horizon < 1:
        raise ToolError("--fps must be > 0 and --horizon >= 1")
    if args.dataset is not None:
        return browse(args, size)
    if args.ckpt_path is None:
        raise ToolError("play needs --ckpt_path (a diamond_pl .ckpt or a DIAMOND .pt), or -d DIR for dataset mode")
    if args.game is not None:
        raise ToolError("--game is for dataset mode (-d); in play mode the checkpoint names the game")
    import torch

    from diamond_pl.tools.play_session import PlaySession

    device = pick_device(args.device)
    agent = load_tool_agent(args.ckpt_path, device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    if args.data_dir is None:
        print(f"playing {args.num_steps_initial_collect} real steps with the policy for world-model contexts ...")
    session = PlaySession(agent, args.horizon, args.num_steps_initial_collect, args.data_dir, args.seed,
                          args.temperature, args.record)
    try:
        print(f"{agent.game} actions (keys -> action):")
        print("\n".join(describe_mapping(session.action_meanings)))
        print("Enter reset | m human/policy | Left/Right env | Up/Down horizon | . pause | e step | Esc quit")
        state = PlayState(horizon=args.horizon, env_index=ENVS.index(args.env), human=not args.policy)
        return run_window(session, state, size, args.fps, not args.no_header, args.max_frames)
    finally:
        session.close()


def browse(args: argparse.Namespace, size: int) -> dict:
    """Dataset mode: find the stores, check --game, open the window."""
    if args.record is not None:
        raise ToolError("-r/--record records play mode; dataset mode (-d) only shows stored episodes")
    if args.ckpt_path is not None:
        raise ToolError("dataset mode (-d) needs no --ckpt_path; use --game GAME to show action names")
    meanings = None
    if args.game is not None:
        from diamond_pl.envs.spec import EnvSpec
        from diamond_pl.games import UnknownGameError

        try:
            meanings = EnvSpec(game=args.game).action_meanings
        except UnknownGameError as e:
            raise ToolError(f"--game: {e}") from None
    from diamond_pl.tools.play_dataset import DatasetBrowser, find_datasets

    browser = DatasetBrowser(find_datasets(args.dataset), meanings)
    print("datasets:\n" + "\n".join(f"  {p}" for p in browser.datasets))
    if browser.notice:
        print(f"{browser.datasets[0]}: {browser.notice}")
    print("m dataset | Up/Down episode | Left/Right step | PageUp/PageDown 10 steps | Enter step 0 | Esc quit")
    return run_dataset_window(browser, size, args.fps, not args.no_header, args.max_frames)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_tool(COMMAND, lambda: play(args))
