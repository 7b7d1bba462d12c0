import gymnasium as gym
import pytest

from diamond_pl.games import ATARI_100K_GAMES, NUM_ACTIONS, UnknownGameError, human_normalised_score, validate_game


def test_unknown_game_lists_valid_names():
    with pytest.raises(UnknownGameError) as e:
        validate_game("Breakoutt")
    assert "Breakoutt" in str(e.value) and "MsPacman" in str(e.value) and "UpNDown" in str(e.value)


def test_game_names_are_normalised():
    assert validate_game("breakout") == "Breakout"
    assert validate_game("MsPacmanNoFrameskip-v4") == "MsPacman"


def test_action_table_matches_ale():
    import ale_py

    gym.register_envs(ale_py)
    for game in ATARI_100K_GAMES:
        env = gym.make(f"{game}NoFrameskip-v4")
        assert env.action_space.n == NUM_ACTIONS[game], game
        env.close()


def test_human_normalised_score():
    # Breakout: random 1.7, human 30.5
    assert human_normalised_score("Breakout", 1.7) == pytest.approx(0.0)
    assert human_normalised_score("Breakout", 30.5) == pytest.approx(1.0)
    assert len(ATARI_100K_GAMES) == 26
