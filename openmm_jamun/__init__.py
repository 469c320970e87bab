"""openmm-jamun: JAMUN walk-jump sampling as OpenMM objects.

The walk runs Langevin dynamics on noised coordinates y = x + σε driven by
the learned score (JamunForce / JamunPythonForce + JamunIntegrator); the
JumpReporter writes each reported walk frame denoised, x̂(y).
"""

__version__ = "0.1.0"

from .force import JamunForce, JamunPythonForce, make_jamun_force
from .integrator import JamunIntegrator, NonFiniteWalkError
from .model.contract import DenoiserContractError, load_denoiser
from .model.gaussian import gaussian_denoiser, gaussian_example
from .reporter import JumpReporter
from .system import NoisedSystem, create_noised_system

__all__ = [
    "DenoiserContractError",
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
