"""The 26 Atari-100k games, their gym ids, and human-normalised scores.

Random/human reference scores come from `atari100k_scores.json` (the standard table used by DIAMOND, IRIS, STORM and
DreamerV3), shipped inside the package so nothing is downloaded at run time.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

ATARI_100K_GAMES: tuple[str, ...] = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout", "ChopperCommand",
    "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull",
    "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown",
)

# Size of each game's minimal action set (ALE 0.10+), so configs can be checked without starting an emulator;
# tests/test_games.py checks this table against ale-py.
NUM_ACTIONS: dict[str, int] = {
    "Alien": 18, "Amidar": 10, "Assault": 7, "Asterix": 9, "BankHeist": 18, "BattleZone": 18, "Boxing": 18,
    "Breakout": 4, "ChopperCommand": 18, "CrazyClimber": 9, "DemonAttack": 6, "Freeway": 3, "Frostbite": 18,
    "Gopher": 8, "Hero": 18, "Jamesbond": 18, "Kangaroo": 18, "Krull": 18, "KungFuMaster": 14, "MsPacman": 9,
    "Pong": 6, "PrivateEye": 18, "Qbert": 6, "RoadRunner": 18, "Seaquest": 18, "UpNDown": 6,
}


class UnknownGameError(ValueError):
    pass


def validate_game(game: str) -> str:
    """Return the canonical game name; accepts `Breakout`, `breakout` or `BreakoutNoFrameskip-v4`."""
    name = game.removesuffix("NoFrameskip-v4")
    for g in ATARI_100K_GAMES:
        if g.lower() == name.lower():
            return g
    raise UnknownGameError(
        f"Unknown game {game!r}. diamond_pl runs the 26 Atari-100k games: {', '.join(ATARI_100K_GAMES)}."
    )


def num_actions(game: str) -> int:
    return NUM_ACTIONS[validate_game(game)]


def gym_id(game: str) -> str:
    return f"{validate_game(game)}NoFrameskip-v4"


@lru_cache(maxsize=1)
def score_table() -> dict:
    with resources.files("diamond_pl").joinpath("atari100k_scores.json").open() as f:
        return json.load(f)["games"]


def human_normalised_score(game: str, score: float) -> float:
    """HNS = (score - random) / (human - random)."""
    row = score_table()[validate_game(game)]
    return (score - row["random"]) / (row["human"] - row["random"])
