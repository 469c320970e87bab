"""openmm-jamun: JAMUN walk-jump sampling as OpenMM objects.

The walk runs Langevin dynamics on noised coordinates y = x + σε driven by
the learned score (JamunForce / JamunPythonForce + JamunIntegrator); the
JumpReporter writes each reported walk frame denoised, x̂(y).
``create_walk_simulation`` builds all of it for a peptide in one call.

The names below are imported on first use, so that modules which need neither
torch nor openmm-torch (reference MD, trajectory files) load without them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "DenoiserContractError": ".model.contract",
    "load_denoiser": ".model.contract",
    "gaussian_denoiser": ".model.gaussian",
    "gaussian_example": ".model.gaussian",
    "JamunForce": ".force",
    "JamunPythonForce": ".force",
    "make_jamun_force": ".force",
    "check_metropolis": ".force",
    "check_walk": ".force",
    "JamunIntegrator": ".integrator",
    "NonFiniteWalkError": ".errors",
    "AcceptanceStateDataReporter": ".integrator",
    "MetropolisWithoutEnergyError": ".errors",
    "jump_from_forces": ".integrator",
    "gaussian_mixture_denoiser": ".model.mixture",
    "mixture_example": ".model.mixture",
    "JumpReporter": ".reporter",
    "SharedBiasMetadynamics": ".metadynamics",
    "reweighting_weights": ".metadynamics",
    "NoisedSystem": ".system",
    "create_noised_system": ".system",
    "WalkSimulation": ".simulation",
    "create_walk_simulation": ".simulation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
