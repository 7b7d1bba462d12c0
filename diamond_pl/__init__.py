"""diamond_pl: DIAMOND (Alonso et al., NeurIPS 2024) as a PyTorch Lightning project."""

__version__ = "0.1.0"
