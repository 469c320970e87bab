"""Denoiser training (single process or torchrun/DDP)."""

from .trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
