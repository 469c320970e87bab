"""The package's exceptions, and how an error raised inside OpenMM is told apart.

An error inside a JAMUN force (TorchScript run by openmm-torch's C++, or a PythonForce callback)
reaches Python as an ``openmm.OpenMMException`` carrying only its message; the force raises the
messages below, and :func:`walk_error` turns such an exception back into a typed one.
"""

from __future__ import annotations


class NonFiniteWalkError(RuntimeError):
    """The walk reached non-finite positions (or the denoiser produced them)."""


class MetropolisWithoutEnergyError(ValueError):
    """A Metropolis walk was asked of a System whose JAMUN force has no energy (a direct denoiser)."""


#: What the force raises inside OpenMM (TorchScript needs the literal strings in its ``raise``;
#: tests/test_force.py checks that they are these).
NONFINITE_POSITIONS = "JamunForce: positions are not finite (NaN or inf)"
NONFINITE_OUTPUT = "JamunForce: the denoiser returned non-finite output"
#: What OpenMM's own integrators and CustomIntegrator checks say of NaN coordinates.
OPENMM_NAN = "NaN"

METROPOLIS_NEEDS_ENERGY = (
    "the Metropolis walk needs an energy-parametrised denoiser: it accepts or rejects each step on the "
    "change of U = kT·E_θ, and a direct denoiser's score is not the gradient of any energy (its force "
    "reports U = 0, so the test would see kinetic energy only and sample the wrong law). Use a model "
    "trained with \"parametrization\": \"energy\" (or its energy form), or run without metropolis")


def walk_error(error: Exception, step: int) -> NonFiniteWalkError | None:
    """The typed error for an exception raised by a walk step (None when it is not a non-finite walk)."""
    message = str(error)
    if NONFINITE_OUTPUT in message:
        reason = "denoiser output"
    elif NONFINITE_POSITIONS in message or OPENMM_NAN in message:
        reason = "positions"
    else:
        return None
    return NonFiniteWalkError(
        f"JAMUN walk stopped: non-finite {reason} at integrator step {step}. Nothing past the last report "
        "was written. Check the input positions (units: nm), the timestep and the denoiser.")
