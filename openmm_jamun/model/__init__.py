"""Denoisers: the TorchScript contract, the analytic Gaussian oracle, the e3nn network and its export."""

from .contract import FORMAT_VERSION, DenoiserContractError, DenoiserInfo, check_denoiser, load_denoiser
from .gaussian import GaussianDenoiser, gaussian_denoiser, gaussian_example

__all__ = [
    "FORMAT_VERSION",
    "DenoiserContractError",
    "DenoiserInfo",
    "GaussianDenoiser",
    "check_denoiser",
    "gaussian_denoiser",
    "gaussian_example",
    "load_denoiser",
]
