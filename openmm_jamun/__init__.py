"""openmm-jamun: JAMUN walk-jump sampling as OpenMM objects.

The walk runs Langevin dynamics on noised coordinates y = x + σε driven by
the learned score (JamunForce / JamunPythonForce + JamunIntegrator); the
JumpReporter writes each reported walk frame denoised, x̂(y).
"""

__version__ = "0.1.0"

from .force import JamunForce, JamunPythonForce, check_metropolis, check_walk, make_jamun_force
from .integrator import (AcceptanceStateDataReporter, JamunIntegrator, MetropolisWithoutEnergyError,
                         NonFiniteWalkError, jump_from_forces)
from .model.contract import DenoiserContractError, load_denoiser
from .model.gaussian import gaussian_denoiser, gaussian_example
from .model.mixture import gaussian_mixture_denoiser, mixture_example
from .reporter import JumpReporter
from .system import NoisedSystem, create_noised_system

__all__ = [
    "AcceptanceStateDataReporter",
    "DenoiserContractError",
    "MetropolisWithoutEnergyError",
    "check_metropolis",
    "check_walk",
    "gaussian_mixture_denoiser",
    "jump_from_forces",
    "mixture_example",
    "JamunForce",
    "JamunIntegrator",
    "JamunPythonForce",
    "JumpReporter",
    "NoisedSystem",
    "NonFiniteWalkError",
    "create_noised_system",
    "gaussian_denoiser",
    "gaussian_example",
    "load_denoiser",
    "make_jamun_force",
]
