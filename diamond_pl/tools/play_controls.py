"""Play mode's controls as pure logic (no pygame), so they can be tested without a window (reference spec §15.2).

Keys are named as `pygame.key.name` names them ("w", "space", "return", "up", ".", ...).

* Human actions: W/A/S/D = up/left/down/right and Space = fire, combined as the game's minimal action names spell
  them (UPRIGHTFIRE = W+D+Space). Of the combinations whose keys are all held, the longest wins (ties: the lower
  action index); no key, or a combination the game does not have, is NOOP.
* Commands: Enter resets; `m` toggles human/policy control; Up/Down change the imagination horizon by 1 (min 1,
  world model only); Right/Left cycle world model -> real test -> real train; `.` pauses; `e` steps once while
  paused; Escape quits. `m` and the arrows also reset.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTION_KEYS = ("w", "a", "s", "d", "space")  # held keys that make up an action
# name parts of ALE's action meanings, in the order they appear in a name (UP/DOWN before LEFT/RIGHT before FIRE)
_PARTS = (("UP", "w"), ("DOWN", "s"), ("LEFT", "a"), ("RIGHT", "d"), ("FIRE", "space"))
_KEY_LABELS = {"w": "W", "a": "A", "s": "S", "d": "D", "space": "Space"}

ENVS = ("wm", "test", "train")
ENV_TITLES = {"wm": "world model", "test": "real (test env)", "train": "real (train env, life loss = end)"}


def keys_of_meaning(meaning: str) -> frozenset[str]:
    """'UPRIGHTFIRE' -> {'w', 'd', 'space'}; 'NOOP' -> {}."""
    rest, keys = meaning.upper(), set()
    if rest == "NOOP":
        return frozenset()
    for part, key in _PARTS:
        if rest.startswith(part):
            keys.add(key)
            rest = rest[len(part):]
    if rest:
        raise ValueError(f"unknown action meaning {meaning!r}")
    return frozenset(keys)


def action_key_map(meanings: list[str]) -> dict[frozenset[str], int]:
    """Key combination -> action index, for the game's minimal action set."""
    out: dict[frozenset[str], int] = {}
    for i, meaning in enumerate(meanings):
        out.setdefault(keys_of_meaning(meaning), i)
    return out


def action_from_keys(held: set[str] | frozenset[str], key_map: dict[frozenset[str], int]) -> int:
    """The action of the longest combination whose keys are all held; NOOP (0) if none."""
    best, best_len = 0, 0
    for combo, action in sorted(key_map.items(), key=lambda kv: kv[1]):
        if combo and combo <= held and len(combo) > best_len:
            best, best_len = action, len(combo)
    return best


def describe_mapping(meanings: list[str]) -> list[str]:
    """Human-readable lines 'W+D+Space  ->  UPRIGHTFIRE' for the game's actions."""
    lines = []
    for combo, action in sorted(action_key_map(meanings).items(), key=lambda kv: kv[1]):
        keys = "+".join(_KEY_LABELS[k] for k in ACTION_KEYS if k in combo) or "(no key)"
        lines.append(f"{keys:>14}  ->  {meanings[action]}")
    return lines


@dataclass
class PlayState:
    """What the player chose: env, controller, horizon, pause; `need_reset` tells the loop to start a new episode."""

    horizon: int = 50
    env_index: int = 0
    human: bool = True
    paused: bool = False
    step_once: bool = False
    need_reset: bool = True
    quit: bool = False

    @property
    def env(self) -> str:
        return ENVS[self.env_index]

    def handle(self, key: str) -> str | None:
        """Apply a key press; returns a short message for the screen, or None if the key means nothing."""
        if key in ("return", "enter"):
            self.need_reset = True
            return "reset"
        if key == "m":
            self.human = not self.human
            self.need_reset = True
            return f"control: {'human' if self.human else 'policy'}"
        if key in ("up", "down"):
            if self.env != "wm":
                return "the horizon applies to the world model only"
            self.horizon = max(1, self.horizon + (1 if key == "up" else -1))
            self.need_reset = True
            return f"horizon {self.horizon}"
        if key in ("left", "right"):
            self.env_index = (self.env_index + (1 if key == "right" else -1)) % len(ENVS)
            self.need_reset = True
            return f"env: {ENV_TITLES[self.env]}"
        if key == ".":
            self.paused = not self.paused
            return "paused (e: one step)" if self.paused else "resumed"
        if key == "e":
            if self.paused:
                self.step_once = True
            return None
        if key == "escape":
            self.quit = True
            return "bye"
        return None

    def should_step(self) -> bool:
        """Advance one step now? (always when running; once per `e` when paused)"""
        if not self.paused:
            return True
        if self.step_once:
            self.step_once = False
            return True
        return False
