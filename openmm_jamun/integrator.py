"""JamunIntegrator: JAMUN's BAOAB walk as an OpenMM CustomIntegrator.

Reference update (docs/design.md), step δ, per-step friction γ, mass M:

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

Metropolis walk (``metropolis=True``, energy-parametrised denoisers only):
generalised HMC with one velocity-Verlet step per proposal, in openmmtools'
splitting grammar "O { V R V }":

    O  v ← e^{−γ}·v + √(1 − e^{−2γ})·√(kT/m)·R
    {  V R V with step Δt (kick Δt/2, drift Δt, kick Δt/2)            }
       accept with probability min(1, exp(−ΔH/kT)), H = U + kinetic energy;
       on rejection x ← x_old, v ← −v_old (the momentum flip keeps the chain exact)

The V R V map is volume-preserving and reversible under a momentum flip for any
force, so the chain leaves exp(−U/kT)·exp(−K/kT) invariant at any step size: its
y samples exp(−E_θ) exactly. The O step sits outside the Metropolised block (it is
not volume-preserving), with e^{−γ} per step as in the plain walk. Positions change
only inside the block, so between proposals the walk carries the same configuration
law as the plain walk's would at Δt → 0. The energy and forces at the current
positions are cached (``Ecur``, ``fcur``) so that each step evaluates the model
once, at the proposal; the cache refreshes when positions are moved from outside.
"""

from __future__ import annotations

import math

import numpy as np
import openmm
from openmm import app, unit

from ._units import jamun_mass, kT_kj_per_mol, length_nm, temperature_kelvin, to_plain
from .errors import METROPOLIS_NEEDS_ENERGY, MetropolisWithoutEnergyError, NonFiniteWalkError, walk_error  # noqa: F401 (re-exported)


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
    metropolis : bool
        Metropolis-exact walk (GHMC "O { V R V }", see the module docstring): samples exp(−E_θ)
        exactly at any step size; needs an energy-parametrised denoiser (:func:`check_metropolis`).
        :attr:`acceptance_rate`, :attr:`n_accept` and :attr:`n_trials` count its proposals.

    Both programs keep the force at the current positions in the per-DOF variable ``fcur``
    (kJ/mol/nm), so a reporter can jump without another evaluation (:func:`jump_from_forces`).
    """

    def __init__(self, temperature=300 * unit.kelvin, sigma=0.04 * unit.nanometer, friction_per_step=1.0,
                 mass=1.0, timestep=None, metropolis: bool = False):
        temperature_k = temperature_kelvin(temperature)
        sigma_nm = length_nm(sigma, "sigma")
        mass = jamun_mass(mass)
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
        self._metropolis = bool(metropolis)
        self._energy_checked = False

        self.addGlobalVariable("kT", kT)
        self.addGlobalVariable("a", math.exp(-gamma))
        self.addGlobalVariable("b", math.sqrt(-math.expm1(-2.0 * gamma)))
        # Counts completed steps; names the step of a failure.
        self.addGlobalVariable("walk_step", 0)
        # the force at the positions the last step ended on (kJ/mol/nm)
        self.addPerDofVariable("fcur", 0)
        if self._metropolis:
            self._add_metropolis_steps()
        else:
            self.addComputeGlobal("walk_step", "walk_step + 1")
            self.addUpdateContextState()
            self.addComputePerDof("v", "v + 0.5*dt*f/m")
            self.addComputePerDof("x", "x + 0.5*dt*v")
            self.addComputePerDof("v", "a*v + b*sqrt(kT/m)*gaussian")
            self.addComputePerDof("x", "x + 0.5*dt*v")
            self.addComputePerDof("fcur", "f")
            self.addComputePerDof("v", "v + 0.5*dt*fcur/m")

    def _add_metropolis_steps(self):
        """GHMC "O { V R V }" with the energy and force at the current positions cached."""
        for name in ("n_trials", "n_accept", "accept", "cached", "refresh", "moved", "Ecur", "Enew", "ke_old",
                     "ke_new"):
            self.addGlobalVariable(name, 0)
        for name in ("xold", "vold", "xcur", "fnew"):
            self.addPerDofVariable(name, 0)
        self.addComputeGlobal("walk_step", "walk_step + 1")
        self.addUpdateContextState()
        # (Re)compute the cache when positions were set from outside since the last step.
        self.addComputeSum("moved", "(x - xcur)^2")
        self.addComputeGlobal("refresh", "1 - delta(moved)*cached")
        self.beginIfBlock("refresh > 0.5")
        self.addComputePerDof("fcur", "f")
        self.addComputeGlobal("Ecur", "energy")
        self.addComputeGlobal("cached", "1")
        self.endBlock()
        # O
        self.addComputePerDof("v", "a*v + b*sqrt(kT/m)*gaussian")
        # { V R V }
        self.addComputeSum("ke_old", "0.5*m*v*v")
        self.addComputePerDof("xold", "x")
        self.addComputePerDof("vold", "v")
        self.addComputePerDof("v", "v + 0.5*dt*fcur/m")
        self.addComputePerDof("x", "x + dt*v")
        self.addComputePerDof("fnew", "f")
        self.addComputeGlobal("Enew", "energy")
        self.addComputePerDof("v", "v + 0.5*dt*fnew/m")
        self.addComputeSum("ke_new", "0.5*m*v*v")
        self.addComputeGlobal("accept", "step(exp(-(Enew + ke_new - Ecur - ke_old)/kT) - uniform)")
        self.addComputePerDof("x", "select(accept, x, xold)")
        self.addComputePerDof("v", "select(accept, v, -vold)")
        self.addComputePerDof("fcur", "select(accept, fnew, fcur)")
        self.addComputeGlobal("Ecur", "select(accept, Enew, Ecur)")
        self.addComputePerDof("xcur", "x")
        self.addComputeGlobal("n_trials", "n_trials + 1")
        self.addComputeGlobal("n_accept", "n_accept + accept")

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

    @property
    def metropolis(self) -> bool:
        return self._metropolis

    @property
    def n_trials(self) -> int:
        """Metropolis proposals so far (0 for the plain walk)."""
        return int(round(self.getGlobalVariableByName("n_trials"))) if self._metropolis else 0

    @property
    def n_accept(self) -> int:
        """Accepted Metropolis proposals so far."""
        return int(round(self.getGlobalVariableByName("n_accept"))) if self._metropolis else 0

    @property
    def acceptance_rate(self) -> float:
        """n_accept / n_trials since construction or :meth:`reset_acceptance` (NaN before any
        proposal; 1.0 for the plain walk, which accepts everything)."""
        if not self._metropolis:
            return 1.0
        trials = self.n_trials
        return self.n_accept / trials if trials else float("nan")

    def reset_acceptance(self) -> None:
        if self._metropolis:
            self.setGlobalVariableByName("n_trials", 0)
            self.setGlobalVariableByName("n_accept", 0)

    def invalidate_cache(self) -> None:
        """Make the next Metropolis step recompute the energy and force at the current positions:
        needed when the potential changes without the positions moving (a metadynamics deposit, a
        parameter change). A no-op for the plain walk, which has no cache."""
        if self._metropolis:
            self.setGlobalVariableByName("cached", 0)

    def current_forces(self):
        """The force (kJ/mol/nm, an (N, 3) array) at the positions the last step ended on, kept by the
        program in ``fcur``; None before the first step."""

        if self.getGlobalVariableByName("walk_step") < 1:
            return None
        return np.asarray(self.getPerDofVariableByName("fcur"), dtype=float)

    def step(self, steps: int) -> None:
        """Advance ``steps`` steps; a non-finite walk stops with an error naming the step.

        A Metropolis walk checks after its first step that the System reports a potential energy:
        exactly 0 both before and after the first proposal means a direct denoiser
        (:class:`MetropolisWithoutEnergyError`; :func:`~openmm_jamun.force.check_metropolis`
        tells it from the System before any step)."""
        steps = int(steps)
        if self._metropolis and not self._energy_checked and steps > 0:
            self._step(1)
            if self.getGlobalVariableByName("Ecur") == 0.0 and self.getGlobalVariableByName("Enew") == 0.0:
                raise MetropolisWithoutEnergyError(METROPOLIS_NEEDS_ENERGY)
            self._energy_checked = True
            steps -= 1
        if steps > 0:
            self._step(steps)

    def _step(self, steps: int) -> None:
        try:
            super().step(steps)
        except openmm.OpenMMException as error:
            # A failed step does not commit its increment: walk_step counts completed steps.
            typed = walk_error(error, int(round(self.getGlobalVariableByName("walk_step"))) + 1)
            if typed is None:
                raise
            raise typed from error


class AcceptanceStateDataReporter(app.StateDataReporter):
    """OpenMM's StateDataReporter plus one column, "Acceptance Rate": the fraction of Metropolis
    proposals accepted since the previous report (since the start for the first). Same arguments
    as StateDataReporter; the simulation's integrator must be a ``JamunIntegrator(metropolis=True)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_counts = None

    def _constructHeaders(self):
        return super()._constructHeaders() + ["Acceptance Rate"]

    def _constructReportValues(self, simulation, state):
        values = super()._constructReportValues(simulation, state)
        integrator = simulation.integrator
        if not getattr(integrator, "metropolis", False):
            raise ValueError("AcceptanceStateDataReporter needs a JamunIntegrator with metropolis=True")
        counts = (integrator.n_accept, integrator.n_trials)
        if self._last_counts is None:
            self._last_counts = (0, 0)
        accepted, trials = counts[0] - self._last_counts[0], counts[1] - self._last_counts[1]
        self._last_counts = counts
        return values + [accepted / trials if trials > 0 else float("nan")]


def jump_from_forces(positions_nm, forces_kj_per_mol_nm, sigma_nm: float, kT_kj_per_mol: float):
    """x̂ = y + σ²·F/kT (nm): the jump from the force at y, no evaluation of the denoiser.

    Exact for energy models without a score clip (F = −kT∇E, x̂ = y − σ²∇E) and for direct
    models wherever the clip did not act (F = kT·(x̂ − y)/σ²). Use with
    :meth:`JamunIntegrator.current_forces` at the positions the last step ended on."""

    return np.asarray(positions_nm) + sigma_nm**2 * np.asarray(forces_kj_per_mol_nm) / kT_kj_per_mol
