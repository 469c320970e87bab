"""JamunIntegrator: JAMUN's BAOAB walk as an OpenMM CustomIntegrator.

Reference update (CONVENTIONS.md), step δ, per-step friction γ, mass M:

    B  v ← v + (δ/2)·s(y)/M
    A  y ← y + (δ/2)·v
    O  v ← e^{−γ}·v + √(1 − e^{−2γ})·√(1/M)·R
    A  y ← y + (δ/2)·v
    B  v ← v + (δ/2)·s(y)/M

In OpenMM units the same update is plain BAOAB Langevin dynamics with force
F = kT·s (kJ/mol/nm, :class:`~openmm_jamun.force.JamunForce`), particle mass
m = M·kT (amu), timestep Δt = δ (ps, numerically) and collision rate γ/δ
(1/ps). The integrator below writes the five steps out literally, so the
O step uses e^{−γ} per step whatever the timestep.
"""

from __future__ import annotations

import math

import openmm
from openmm import unit

from ._units import kT_kj_per_mol, length_nm, temperature_kelvin, to_plain


class NonFiniteWalkError(RuntimeError):
    """The walk reached non-finite positions (or the denoiser produced them)."""


def _timestep_ps(timestep, sigma_nm: float) -> float:
    """Δt in ps: δ = σ by default; a time is taken as Δt, a length as JAMUN's δ."""
    if timestep is None:
        return sigma_nm
    if unit.is_quantity(timestep) and timestep.unit.is_compatible(unit.nanometer):
        return length_nm(timestep, "timestep")
    value = to_plain(timestep, unit.picosecond, "timestep")
    if value <= 0:
        raise ValueError(f"timestep must be positive; got {value} ps")
    return value


class JamunIntegrator(openmm.CustomIntegrator):
    """BAOAB Langevin integrator with JAMUN's defaults (δ = σ, γ = 1 per step, M = 1).

    Parameters
    ----------
    temperature : temperature (plain numbers: K)
        Sets kT, the unit in which forces and masses are expressed. It cancels
        in the walk's statistics but must match the force's temperature.
    sigma : length (plain numbers: nm)
        Noise level; the default timestep is δ = σ.
    friction_per_step : float, or a collision rate (1/time)
        γ, dimensionless: the O step keeps e^{−γ} of the velocity each step.
        The equivalent OpenMM collision rate is :attr:`collision_rate` = γ/Δt;
        a rate quantity (e.g. 25/picosecond) is converted to γ = rate·Δt.
    mass : float
        JAMUN's M. Walk particles must have mass M·kT (:attr:`particle_mass`);
        :func:`~openmm_jamun.system.create_noised_system` sets it.
    timestep : time or length, optional
        Δt. A time is used as is; a length is JAMUN's δ (Δt = δ numerically).
    """

    def __init__(self, temperature=300 * unit.kelvin, sigma=0.04 * unit.nanometer, friction_per_step=1.0,
                 mass=1.0, timestep=None):
        temperature_k = temperature_kelvin(temperature)
        sigma_nm = length_nm(sigma, "sigma")
        if unit.is_quantity(mass):
            raise TypeError("mass is JAMUN's dimensionless M (particle mass = M·kT); pass a plain number")
        mass = float(mass)
        if not (math.isfinite(mass) and mass > 0):
            raise ValueError(f"mass must be positive; got {mass}")
        dt = _timestep_ps(timestep, sigma_nm)
        if unit.is_quantity(friction_per_step) and friction_per_step.unit.is_compatible(unit.picosecond**-1):
            gamma = friction_per_step.value_in_unit(unit.picosecond**-1) * dt
        else:
            gamma = to_plain(friction_per_step, unit.dimensionless, "friction_per_step (γ per step, or a rate)")
        if not gamma >= 0:
            raise ValueError(f"friction_per_step must be >= 0; got {friction_per_step}")
        super().__init__(dt)

        kT = kT_kj_per_mol(temperature_k)
        self._temperature = temperature_k
        self._sigma = sigma_nm
        self._gamma = gamma
        self._mass = mass
        self._kT = kT

        self.addGlobalVariable("kT", kT)
        self.addGlobalVariable("a", math.exp(-gamma))
        self.addGlobalVariable("b", math.sqrt(-math.expm1(-2.0 * gamma)))
        # Counts completed B A O A B steps; names the step of a failure.
        self.addGlobalVariable("walk_step", 0)
        self.addComputeGlobal("walk_step", "walk_step + 1")
        self.addUpdateContextState()
        self.addComputePerDof("v", "v + 0.5*dt*f/m")
        self.addComputePerDof("x", "x + 0.5*dt*v")
        self.addComputePerDof("v", "a*v + b*sqrt(kT/m)*gaussian")
        self.addComputePerDof("x", "x + 0.5*dt*v")
        self.addComputePerDof("v", "v + 0.5*dt*f/m")

    # -- what users ask of it -------------------------------------------------
    @property
    def temperature(self) -> unit.Quantity:
        return self._temperature * unit.kelvin

    @property
    def sigma(self) -> unit.Quantity:
        return self._sigma * unit.nanometer

    @property
    def friction_per_step(self) -> float:
        return self._gamma

    @property
    def mass(self) -> float:
        return self._mass

    @property
    def kT(self) -> unit.Quantity:
        return self._kT * unit.kilojoule_per_mole

    @property
    def particle_mass(self) -> unit.Quantity:
        """m = M·kT: the mass every walk particle must have (amu)."""
        return self._mass * self._kT * unit.amu

    @property
    def collision_rate(self) -> unit.Quantity:
        """γ/Δt: the equivalent OpenMM friction coefficient (1/ps)."""
        return self._gamma / self.getStepSize().value_in_unit(unit.picosecond) / unit.picosecond

    def getTemperature(self) -> unit.Quantity:  # OpenMM's name, used by some tools
        return self.temperature

    def step(self, steps: int) -> None:
        """Advance ``steps`` steps; a non-finite walk stops with an error naming the step."""
        try:
            super().step(steps)
        except openmm.OpenMMException as error:
            message = str(error)
            # Our force says "not finite"; OpenMM's own check says "NaN".
            if not any(word in message for word in ("not finite", "non-finite", "NaN")):
                raise
            # A failed step does not commit its increment: walk_step counts completed steps.
            step = int(round(self.getGlobalVariableByName("walk_step"))) + 1
            reason = "denoiser output" if "denoiser" in message else "positions"
            raise NonFiniteWalkError(
                f"JAMUN walk stopped: non-finite {reason} at integrator step {step}. "
                "Nothing past the last report was written. Check the input positions "
                "(units: nm), the timestep and the denoiser."
            ) from error
