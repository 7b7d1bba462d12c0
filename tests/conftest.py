from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "diamond_small"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN_DIR.is_dir():
        pytest.skip(f"golden data not found at {GOLDEN_DIR} (expected ../shared/golden beside the checkout)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden_outputs(golden_dir):
    import torch

    return torch.load(golden_dir / "reference_outputs.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_state_dict(golden_dir):
    import torch

    return torch.load(golden_dir / "agent_state_dict.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_config(golden_dir):
    import json

    return json.loads((golden_dir / "config.json").read_text())
