"""Denoisers: the TorchScript contract, the analytic Gaussian and Gaussian-mixture oracles, the e3nn network
(direct or energy-parametrised) and its export."""

from .contract import (ENERGY_KINDS, FORMAT_VERSION, DenoiserContractError, DenoiserInfo, check_denoiser,
                       load_denoiser)
from .gaussian import GaussianDenoiser, gaussian_denoiser, gaussian_example
from .mixture import GaussianMixtureDenoiser, gaussian_mixture_denoiser, mixture_example

__all__ = [
    "ENERGY_KINDS",
    "FORMAT_VERSION",
    "GaussianMixtureDenoiser",
    "gaussian_mixture_denoiser",
    "mixture_example",
    "DenoiserContractError",
    "DenoiserInfo",
    "GaussianDenoiser",
    "check_denoiser",
    "gaussian_denoiser",
    "gaussian_example",
    "load_denoiser",
]
