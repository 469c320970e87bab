"""Well-tempered metadynamics of a K-chain walk with one bias shared by all chains.

The K chains of a walk are independent copies of one peptide in one System. Biasing each with its
own metadynamics would fill K separate grids, each from 1/K of the samples. Here the chains are
*multiple walkers* (Raiteri et al., J. Phys. Chem. B 2006) of one well-tempered metadynamics
(Barducci et al., PRL 2008): one bias grid V(s), every chain feels V at its own collective
variables, and every chain deposits into the same grid. The bias energy is

    U_bias(y) = Σ_k V(s_k(y))·S_k(y),

with S_k an optional scale (1 unless a variable carries one; below), one ``openmm.CustomCVForce``
whose collective variables are, for every chain k and variable j, a force on chain k's atoms (a
``CustomTorsionForce`` for a torsion), and whose energy expression sums ONE tabulated function
(``Continuous1D/2D/3DFunction``) over the chains. The grid is therefore
shared by construction and updated once per deposition. OpenMM's own
``openmm.app.metadynamics.Metadynamics`` biases one set of variables per System (its table takes
the System's variables once), so it cannot give K chains one grid; its deposition rule, grid
layout and periodic wrap are reused here unchanged, as is its ``BiasVariable``.

The bias acts on the noised coordinates y (torsions of y), like any OpenMM force on the walk; the
clean frames x̂(y) inherit it and are reweighted (:func:`reweighting_weights`).

A variable may carry a scale S_k(y) in [0, 1] that multiplies walker k's bias. Torsion variables
use it: the gradient of a torsion grows as 1/sin θ of its two bond angles, and in noised coordinates
(σ = 0.04 nm on 0.15-nm bonds) nearly straight or folded angles are common, so a bias of a few
kJ/mol can kick an atom by tenths of a nanometre, out of the denoiser's domain. The switch is
S = Π (1 − exp(−sin²θ / s0)) over the torsion's two bond angles (s0 = :data:`ANGLE_SWITCH`; over
every biased torsion's angles when there are several). Each factor is 1 to within 0.2% at a clean
backbone's bond angles (110-125°) and 0.98 at 140°, and it vanishes where the torsion is undefined
(0° or 180°), so the bias force stays bounded. The walk's own angles spread much wider than a clean
backbone's, so S is well below 1 in a fair share of its frames. What that changes:

* the weights use the bias actually felt, V·S: exact reweighting needs only that;
* the switch has a force of its own, −V∇S, which favours straighter angles where the bias is
  large; the weights remove its effect on averages along with the rest of the bias;
* a walker deposits h·S_k·exp(−V(s_k)/(k_B ΔT)): little where its torsion is nearly undefined,
  which it barely felt;
* the well-tempered relations of the grid (:meth:`SharedBiasMetadynamics.free_energy`, c(t)) assume
  the bias is V(s) alone, so with the switch they are approximations, as is the c(t) in the weights.

The torsion defaults are gentle (γ = 3, h = 0.25 kJ/mol ≈ 0.1 kT, width 0.5 rad). The walk crosses
between torsion basins within tens of steps (its clean frames' torsions decorrelate that fast), so it
needs no strong bias to do so; a larger γ lets the bias grow to tens of kJ/mol, whose force
V'(s)·∂s/∂y outgrows the denoiser's clipped score (100 kT/nm per atom) and carries chains out of the
noised data, where the model no longer holds them together (docs/design.md has the figures).

Deposition (every ``deposit_interval`` steps, through the reporter protocol, so a plain
``simulation.step(n)`` runs it): for each chain k a Gaussian of height h·S_k·exp(−V(s_k)/(k_B ΔT)),
ΔT = (γ − 1)T, centred at that chain's s_k; all K heights use the bias before this round.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from functools import reduce
from typing import Callable, Sequence

import numpy as np
import openmm
from openmm import unit
from openmm.app.metadynamics import BiasVariable

from ._units import kT_kj_per_mol, temperature_kelvin, to_plain

#: the torsion kinds a bias can name ('<kind>:<residue index>', as ``jamun analyze`` names them)
TORSION_KINDS = ("phi", "psi", "chi1", "chi2", "chi3", "chi4", "chi5")
_FILE_VERSION = 2
#: s0 of the bond-angle switch 1 − exp(−sin²θ/s0) on torsion biases (see the module docstring)
ANGLE_SWITCH = 0.1
#: Defaults of a bias on torsions of the walk (``jamun sample --metad``); gentle, see the module docstring
TORSION_BIAS_FACTOR = 3.0
TORSION_HEIGHT_KJ_PER_MOL = 0.25
TORSION_WIDTH_RAD = 0.5
DEPOSIT_INTERVAL = 100
DIRECT_DENOISER_WARNING = (
    "metadynamics on a direct (non-energy) denoiser: the walk's stationary law is not exp(-U), so "
    "the reweighted populations are approximate; an energy-parametrised model makes them exact up "
    "to the integrator's step error and the score clip")


def parse_torsions(spec: str) -> list[tuple[str, int]]:
    """``"phi:2,psi:1,chi1:2"`` → ``[("phi", 2), ("psi", 1), ("chi1", 2)]`` (1-3 torsions, residue
    indices as in the topology: a capped dipeptide's residues are 1 and 2)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"torsions: expected e.g. 'phi:1,psi:1'; got {spec!r}")
    out = []
    for item in spec.split(","):
        item = item.strip()
        kind, sep, residue = item.partition(":")
        kind = kind.strip().lower()
        if kind not in TORSION_KINDS:
            raise ValueError(f"unknown torsion {item!r}: the kind must be one of {', '.join(TORSION_KINDS)}")
        if not sep or not residue.strip().isdigit():
            raise ValueError(f"torsion {item!r}: expected '<kind>:<residue index>', e.g. '{kind}:1'")
        out.append((kind, int(residue)))
    if len(set(out)) != len(out):
        raise ValueError(f"torsions: {spec!r} names a torsion twice")
    if not 1 <= len(out) <= 3:
        raise ValueError(f"metadynamics biases 1 to 3 variables; {spec!r} names {len(out)}")
    return out


def _names(torsions) -> list[tuple[str, int]]:
    if isinstance(torsions, str):
        return parse_torsions(torsions)
    return parse_torsions(",".join(f"{kind}:{residue}" for kind, residue in torsions))


def chain_atoms(topology) -> tuple[int, int]:
    """(K chains, n atoms per chain) of a walk topology; an error unless the chains are equal and
    contiguous (chain k = atoms k·n ... (k+1)·n − 1)."""
    chains = list(topology.chains())
    n = len(list(chains[0].atoms()))
    for k, chain in enumerate(chains):
        indices = [atom.index for atom in chain.atoms()]
        if indices != list(range(k * n, (k + 1) * n)):
            raise ValueError("the topology's chains are not K equal, contiguous copies of one peptide")
    return len(chains), n


def torsion_quartets(topology, torsions) -> np.ndarray:
    """The atom indices [d, 4] in chain 0 of the walk ``topology`` of each named torsion
    (``"phi:1,psi:1"`` or a list of (kind, residue)); the same quartets mdtraj's compute_phi/psi/chi*
    give ``jamun analyze``. Chain k's quartet is this one + k·n."""
    import mdtraj

    from .analysis.torsions import torsion_name

    names = _names(torsions)
    _, n = chain_atoms(topology)
    full = mdtraj.Topology.from_openmm(topology)
    one = full.subset(range(n))
    traj = mdtraj.Trajectory(np.zeros((1, n, 3), dtype=np.float32), one)
    available = {}
    for kind in {kind for kind, _ in names}:
        with np.errstate(all="ignore"):
            indices, _ = getattr(mdtraj, f"compute_{kind}")(traj)
        for quartet in indices:
            available[torsion_name(kind, quartet, one)] = [int(i) for i in quartet]
    out = []
    for kind, residue in names:
        key = f"{kind}:{residue}"
        if key not in available:
            residues = [f"{r.index} {r.name}" for r in one.residues]
            have = sorted(k for k in available if k.startswith(kind + ":")) or ["none"]
            raise ValueError(f"the peptide has no torsion {key} (residues {', '.join(residues)}; its {kind} "
                             f"torsions: {', '.join(have)})")
        out.append(available[key])
    return np.asarray(out, dtype=np.int64)


class WalkerVariable(BiasVariable):
    """A collective variable with one copy per walker (chain): ``force_for(k)`` returns a new Force
    whose energy is walker k's value of the variable. The grid settings are OpenMM's
    ``BiasVariable``'s (``minValue``, ``maxValue``, ``biasWidth``: the Gaussians' standard
    deviation, ``periodic``, ``gridWidth``: grid points; plain numbers in nm, radians, ...).
    ``scale_for(k)``, optional, returns a Force whose energy is a factor in [0, 1] multiplying walker
    k's bias (a torsion's bond-angle switch); ``scale_setting`` is its parameter, kept with the bias."""

    def __init__(self, force_for: Callable[[int], openmm.Force], minValue, maxValue, biasWidth,
                 periodic: bool = False, gridWidth: int | None = None, name: str = "cv",
                 scale_for: Callable[[int], openmm.Force] | None = None, scale_setting: float = 0.0):
        if not callable(force_for):
            raise ValueError("force_for must be a callable: walker index -> Force")
        if scale_for is not None and not callable(scale_for):
            raise ValueError("scale_for must be None or a callable: walker index -> Force")
        minValue, maxValue, biasWidth = (v.value_in_unit_system(unit.md_unit_system) if unit.is_quantity(v) else
                                         float(v) for v in (minValue, maxValue, biasWidth))
        if not maxValue > minValue:
            raise ValueError(f"{name}: maxValue ({maxValue}) must exceed minValue ({minValue})")
        if not biasWidth > 0:
            raise ValueError(f"{name}: the bias width must be > 0; got {biasWidth}")
        if gridWidth is not None and (int(gridWidth) != gridWidth or gridWidth < 3):
            raise ValueError(f"{name}: gridWidth must be an integer >= 3; got {gridWidth}")
        super().__init__(None, minValue, maxValue, biasWidth, bool(periodic),
                         None if gridWidth is None else int(gridWidth))
        self.force_for = force_for
        self.scale_for = scale_for
        self.scale_setting = float(scale_setting) if scale_for is not None else 0.0
        self.name = name


def torsion_variables(topology, torsions, width=TORSION_WIDTH_RAD * unit.radian, grid_points: int | None = None,
                      angle_switch: float = ANGLE_SWITCH):
    """WalkerVariables for named torsions of every chain of a walk topology: periodic over [−π, π),
    walker k's torsion is chain k's quartet (chain 0's + k·n). ``width``: one or one per torsion.
    ``angle_switch``: s0 of the bond-angle switch on the bias (module docstring); 0 turns it off."""
    names = _names(torsions)
    quartets = torsion_quartets(topology, names)
    _, n = chain_atoms(topology)
    widths = list(width) if isinstance(width, (list, tuple)) else [width] * len(names)
    if len(widths) != len(names):
        raise ValueError(f"width: give one value or one per torsion ({len(names)}); got {len(widths)}")

    if not angle_switch >= 0:
        raise ValueError(f"angle_switch must be >= 0; got {angle_switch}")

    def factory(quartet):
        def force_for(k):
            force = openmm.CustomTorsionForce("theta")
            force.addTorsion(*(int(i) + k * n for i in quartet))
            return force
        return force_for

    s0 = float(angle_switch)

    def switch_factory(quartet):
        def scale_for(k):
            force = openmm.CustomCompoundBondForce(
                4, f"(1 - exp(-sin(angle(p1, p2, p3))^2 / {s0!r})) * (1 - exp(-sin(angle(p2, p3, p4))^2 / {s0!r}))")
            force.addBond([int(i) + k * n for i in quartet], [])
            return force
        return scale_for

    return [WalkerVariable(factory(q), -math.pi, math.pi, to_plain(w, unit.radian, "width"), periodic=True,
                           gridWidth=grid_points, name=f"{kind}:{residue}",
                           scale_for=switch_factory(q) if s0 > 0 else None, scale_setting=s0)
            for (kind, residue), q, w in zip(names, quartets, widths)]


class SharedBiasMetadynamics:
    """Well-tempered metadynamics with one bias grid shared by the walkers (the chains of a walk).

    Parameters
    ----------
    variables : list of WalkerVariable
        1-3 collective variables, all periodic or all not (:func:`torsion_variables` for torsions).
    walkers : int
        K: walker k feels and deposits at ``variable.force_for(k)``'s values.
    temperature : temperature, optional
        The walk's (default: read from the System's JAMUN force at :meth:`add_to`; a different
        one is an error there).
    bias_factor : float
        γ > 1: the variables are sampled as if at temperature γT.
    height : energy
        Initial Gaussian height h (plain numbers: kJ/mol).
    deposit_interval : int
        Steps between depositions.
    record_interval : int, optional
        Steps between records of (V(s_k)·S_k, c(t)) for :meth:`weights`; give a JumpReporter's interval
        to align frame i of its file with row i of the weights. A record at a deposition step is
        taken before the deposit: the bias the frame was sampled under.

    Use :meth:`add_to` (adds the force, reinitialises the Context, registers the object as a
    reporter), then ``simulation.step(n)``. :meth:`save` / :meth:`load` keep the bias across a
    checkpoint.
    """

    def __init__(self, variables: Sequence[WalkerVariable], walkers: int, temperature=None, bias_factor: float = 10.0,
                 height=1.0 * unit.kilojoule_per_mole, deposit_interval: int = DEPOSIT_INTERVAL,
                 record_interval: int | None = None):
        variables = list(variables)
        if not 1 <= len(variables) <= 3:
            raise ValueError(f"metadynamics biases 1 to 3 variables; got {len(variables)}")
        if not all(isinstance(v, WalkerVariable) for v in variables):
            raise ValueError("variables must be WalkerVariables (one Force per walker)")
        if len({v.periodic for v in variables}) != 1:
            raise ValueError("the variables must be all periodic or all non-periodic (one tabulated function)")
        if int(walkers) != walkers or walkers < 1:
            raise ValueError(f"walkers must be a positive integer; got {walkers}")
        if not float(bias_factor) > 1.0:
            raise ValueError(f"bias_factor must be > 1 (well-tempered); got {bias_factor}")
        for name, value in (("deposit_interval", deposit_interval), ("record_interval", record_interval)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer; got {value}")
        self.height = to_plain(height, unit.kilojoule_per_mole, "height")
        if not self.height > 0:
            raise ValueError(f"height must be > 0; got {self.height} kJ/mol")
        self.variables = variables
        self.walkers = int(walkers)
        self.bias_factor = float(bias_factor)
        self.deposit_interval = int(deposit_interval)
        self.record_interval = None if record_interval is None else int(record_interval)
        self.temperature = None if temperature is None else temperature_kelvin(temperature)
        self.periodic = variables[0].periodic
        self._widths = [v.gridWidth for v in variables]
        self._limits = sum(([v.minValue, v.maxValue] for v in variables), [])
        #: the bias V on the grid, kJ/mol, axes in reverse variable order (OpenMM's table layout)
        self.bias_grid = np.zeros(tuple(reversed(self._widths)))
        self.deposits = 0
        self.frame_bias: list[np.ndarray] = []  # per record: V(s_k)·S_k at each walker, kJ/mol
        self.frame_c: list[float] = []  # per record: c(t), kJ/mol
        self.frame_steps: list[int] = []
        self._force, self._table = self._make_bias_force()
        self._simulation = None
        self._cv_context = None
        self._table_context = None
        self._helper_grid = None  # the grid the table helper holds

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def for_torsions(cls, topology, torsions="phi:1,psi:1", width=TORSION_WIDTH_RAD * unit.radian,
                     grid_points: int | None = None, angle_switch: float = ANGLE_SWITCH,
                     bias_factor: float = TORSION_BIAS_FACTOR,
                     height=TORSION_HEIGHT_KJ_PER_MOL * unit.kilojoule_per_mole,
                     **kwargs) -> "SharedBiasMetadynamics":
        """A bias on named torsions (``"phi:1,psi:1"``) of every chain of a walk topology (or a
        Simulation's), with the bond-angle switch ``angle_switch`` (0: none) and the gentle torsion
        defaults (module docstring); ``kwargs`` as the constructor's."""
        topology = getattr(topology, "topology", topology)
        walkers, _ = chain_atoms(topology)
        return cls(torsion_variables(topology, torsions, width, grid_points, angle_switch), walkers,
                   bias_factor=bias_factor, height=height, **kwargs)

    def _cv_name(self, k: int, j: int) -> str:
        return f"s{k}_{j}"

    def _scale_name(self, k: int, j: int) -> str:
        return f"w{k}_{j}"

    @property
    def _scaled(self) -> list[int]:
        """Indices of the variables that carry a bias scale."""
        return [j for j, v in enumerate(self.variables) if v.scale_for is not None]

    def _make_table(self, values):
        flat = np.asarray(values, dtype=float).ravel()
        if len(self.variables) == 1:
            return openmm.Continuous1DFunction(flat, *self._limits, self.periodic)
        if len(self.variables) == 2:
            return openmm.Continuous2DFunction(*self._widths, flat, *self._limits, self.periodic)
        return openmm.Continuous3DFunction(*self._widths, flat, *self._limits, self.periodic)

    def _set_table(self, table):
        flat = self.bias_grid.ravel()
        if len(self.variables) == 1:
            table.setFunctionParameters(flat, *self._limits)
        else:
            table.setFunctionParameters(*self._widths, flat, *self._limits)

    def _make_bias_force(self):
        """Σ_k table(s_k)·S_k: one CustomCVForce, one tabulated function for all walkers. The
        variables s come first (walker by walker), then the scales."""
        d = len(self.variables)
        terms = ["*".join(["table(" + ", ".join(self._cv_name(k, j) for j in range(d)) + ")"]
                          + [self._scale_name(k, j) for j in self._scaled]) for k in range(self.walkers)]
        force = openmm.CustomCVForce(" + ".join(terms))
        for k in range(self.walkers):
            for j, variable in enumerate(self.variables):
                cv = variable.force_for(k)
                if not isinstance(cv, openmm.Force):
                    raise ValueError(f"{variable.name}: force_for({k}) returned {type(cv).__name__}, not a Force")
                force.addCollectiveVariable(self._cv_name(k, j), cv)
        for k in range(self.walkers):
            for j in self._scaled:
                scale = self.variables[j].scale_for(k)
                if not isinstance(scale, openmm.Force):
                    raise ValueError(f"{self.variables[j].name}: scale_for({k}) returned {type(scale).__name__}, "
                                     "not a Force")
                force.addCollectiveVariable(self._scale_name(k, j), scale)
        table = self._make_table(self.bias_grid)
        force.addTabulatedFunction("table", table)
        force.setName("SharedBiasMetadynamics")
        return force, table

    @property
    def force(self) -> openmm.CustomCVForce:
        """The bias force (in the System after :meth:`add_to`)."""
        return self._force

    def add_to(self, simulation) -> "SharedBiasMetadynamics":
        """Add the bias force to ``simulation``'s System in a free force group, reinitialise its
        Context (state kept) and append this object to its reporters, so ``simulation.step`` deposits."""
        if self._simulation is not None:
            raise ValueError("this metadynamics is already added to a simulation")
        from .force import find_score_module, force_has_energy

        system = simulation.system
        module = find_score_module(system)
        if module is not None and hasattr(module, "kT"):
            walk_kelvin = float(module.kT) / kT_kj_per_mol(1.0)
            if self.temperature is None:
                self.temperature = walk_kelvin
            elif not math.isclose(self.temperature, walk_kelvin, rel_tol=1e-6):
                raise ValueError(f"metadynamics temperature {self.temperature:.2f} K is not the walk's "
                                 f"({walk_kelvin:.2f} K): weights exp(V/kT) need the walk's kT")
        if self.temperature is None:
            raise ValueError("temperature: the System has no JAMUN force to read it from; pass temperature=")
        if module is not None and not force_has_energy(module):
            warnings.warn(DIRECT_DENOISER_WARNING, stacklevel=2)
        free = sorted(set(range(32)) - {f.getForceGroup() for f in system.getForces()})
        if not free:
            raise ValueError("no free force group for the metadynamics force (all 32 are used)")
        self._force.setForceGroup(free[-1])
        system.addForce(self._force)
        simulation.context.reinitialize(preserveState=True)
        simulation.reporters.append(self)
        self._simulation = simulation
        return self

    # -- the reporter protocol -------------------------------------------------------------------

    def describeNextReport(self, simulation):
        step = simulation.currentStep
        steps = self.deposit_interval - step % self.deposit_interval
        if self.record_interval is not None:
            steps = min(steps, self.record_interval - step % self.record_interval)
        return {"steps": steps, "periodic": False, "include": []}

    def report(self, simulation, state):
        step = simulation.currentStep
        recording = self.record_interval is not None and step % self.record_interval == 0
        depositing = step % self.deposit_interval == 0
        if not (recording or depositing):
            return
        values = self._force.getCollectiveVariableValues(simulation.context)
        cvs, scales = self._split(values)
        bias = self.bias_at_cv(cvs)
        if recording:
            self.frame_bias.append(bias * scales)  # the bias the frame felt
            self.frame_c.append(self.c_of_t())
            self.frame_steps.append(int(step))
        if depositing:
            self._deposit(cvs, bias, scales)
            self._force.updateParametersInContext(simulation.context)
            _potential_changed(simulation)

    # -- the bias -------------------------------------------------------------------------------

    @property
    def force_group(self) -> int:
        return self._force.getForceGroup()

    def _split(self, values) -> tuple[np.ndarray, np.ndarray]:
        """The force's collective-variable values as (s [K, d], S_k [K]: the product of the scales)."""
        values = np.asarray(values, dtype=float)
        d, K = len(self.variables), self.walkers
        cvs = values[:K * d].reshape(K, d)
        scales = values[K * d:].reshape(K, len(self._scaled)).prod(axis=1)
        return cvs, scales

    def collective_variables(self, context) -> np.ndarray:
        """s_k of every walker in ``context`` (a Context with this force), [K, d]."""
        return self._split(self._force.getCollectiveVariableValues(context))[0]

    def bias_scales(self, context) -> np.ndarray:
        """S_k of every walker in ``context``, [K] (1 where no variable carries a scale)."""
        return self._split(self._force.getCollectiveVariableValues(context))[1]

    def _deposit(self, cvs: np.ndarray, bias: np.ndarray, scales: np.ndarray | None = None) -> None:
        """One Gaussian per walker, height h·S_k·exp(−V(s_k)/(k_B ΔT)); OpenMM's grid rule, vectorised."""
        delta_t = (self.bias_factor - 1.0) * self.temperature
        heights = self.height * np.exp(-bias / kT_kj_per_mol(delta_t))
        if scales is not None:
            heights = heights * scales
        total = np.zeros_like(self.bias_grid)
        for k in range(self.walkers):
            axes = []
            for j, v in enumerate(self.variables):
                x = (cvs[k, j] - v.minValue) / (v.maxValue - v.minValue)
                if v.periodic:
                    x = x % 1.0
                dist = np.abs(np.linspace(0, 1.0, num=v.gridWidth) - x)
                if v.periodic:
                    dist = np.minimum(dist, np.abs(dist - 1))
                    dist[-1] = dist[0]
                axes.append(np.exp(-0.5 * dist * dist / v._scaledVariance))
            gaussian = axes[0] if len(axes) == 1 else reduce(np.multiply.outer, reversed(axes))
            total += heights[k] * gaussian
        self.bias_grid += total
        self.deposits += 1
        self._set_table(self._table)

    def _cv_helper(self, num_particles: int):
        """A Reference Context with a copy of the bias force: the CVs at given positions."""
        if self._cv_context is None or self._cv_context[1] != num_particles:
            system = openmm.System()
            for _ in range(num_particles):
                system.addParticle(1.0)
            force, _ = self._make_bias_force()
            system.addForce(force)
            context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                     openmm.Platform.getPlatformByName("Reference"))
            self._cv_context = (context, num_particles, force)
        return self._cv_context

    def _table_helper(self):
        """A Reference Context of one particle whose coordinates are the CVs and whose energy is
        the tabulated bias there: V(s) evaluated by the function the force uses."""
        if self._table_context is None:
            system = openmm.System()
            system.addParticle(1.0)
            d = len(self.variables)
            force = openmm.CustomCVForce("table(" + ", ".join(f"c{j}" for j in range(d)) + ")")
            for j, axis in enumerate("xyz"[:d]):
                cv = openmm.CustomExternalForce(axis)
                cv.addParticle(0, [])
                force.addCollectiveVariable(f"c{j}", cv)
            table = self._make_table(self.bias_grid)
            force.addTabulatedFunction("table", table)
            system.addForce(force)
            context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                     openmm.Platform.getPlatformByName("Reference"))
            self._table_context = (context, force, table)
            self._helper_grid = self.bias_grid.copy()
        return self._table_context

    def bias_at_cv(self, cvs) -> np.ndarray:
        """V(s) (kJ/mol) at each row of ``cvs`` [M, d], interpolated by OpenMM's own tabulated
        function (the numbers the force uses)."""
        cvs = np.atleast_2d(np.asarray(cvs, dtype=float))
        d = len(self.variables)
        if cvs.shape[1] != d:
            raise ValueError(f"expected {d} collective variable(s) per row; got shape {cvs.shape}")
        context, force, table = self._table_helper()
        if self._helper_grid is None or not np.array_equal(self._helper_grid, self.bias_grid):
            self._set_table(table)
            force.updateParametersInContext(context)
            self._helper_grid = self.bias_grid.copy()
        out = np.empty(len(cvs))
        point = np.zeros((1, 3))
        for m, s in enumerate(cvs):
            point[0, :d] = s
            context.setPositions(point)
            out[m] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return out

    def _values_at(self, positions_nm) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(getattr(positions_nm, "value_in_unit", lambda u: positions_nm)(unit.nanometer),
                               dtype=float)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must have shape (atoms, 3); got {positions.shape}")
        context, _, force = self._cv_helper(len(positions))
        context.setPositions(positions)
        return self._split(force.getCollectiveVariableValues(context))

    def collective_variables_at(self, positions_nm) -> np.ndarray:
        """s_k of every walker at walk positions [K·n, 3] (nm), [K, d]."""
        return self._values_at(positions_nm)[0]

    def bias_at(self, positions_nm) -> np.ndarray:
        """The bias V(s_k)·S_k each walker feels (kJ/mol, [K]) at walk positions [K·n, 3] (nm); their
        sum is the bias force's energy at those positions."""
        cvs, scales = self._values_at(positions_nm)
        return self.bias_at_cv(cvs) * scales

    def _unique_grid(self) -> np.ndarray:
        """The grid without the duplicated last point of periodic axes (each state counted once)."""
        if not self.periodic:
            return self.bias_grid
        return self.bias_grid[(slice(0, -1),) * self.bias_grid.ndim]

    def c_of_t(self) -> float:
        """Tiwary & Parrinello's c(t) = kT log[∫ e^{γV/((γ−1)kT)} ds / ∫ e^{V/((γ−1)kT)} ds] (kJ/mol) of
        the current bias, on the grid (uniform measure in s)."""
        from scipy.special import logsumexp

        if self.temperature is None:
            raise ValueError("temperature unknown: pass temperature= or call add_to first")
        kT = kT_kj_per_mol(self.temperature)
        v = self._unique_grid().ravel() / kT
        g = self.bias_factor
        return float(kT * (logsumexp(g / (g - 1) * v) - logsumexp(v / (g - 1))))

    def free_energy(self) -> np.ndarray:
        """F(s) = −(γ/(γ−1))·V(s) on the grid (kJ/mol, up to a constant), well-tempered's estimate
        (approximate when the variables carry a scale, as torsions do: module docstring)."""
        return -(self.bias_factor / (self.bias_factor - 1.0)) * self.bias_grid

    def weights(self) -> np.ndarray:
        """Normalised reweighting weights [F, K] of the recorded frames (:func:`reweighting_weights`)."""
        if self.temperature is None:
            raise ValueError("temperature unknown: pass temperature= or call add_to first")
        return reweighting_weights(np.asarray(self.frame_bias).reshape(-1, self.walkers), self.frame_c,
                                   self.temperature)

    # -- persistence ----------------------------------------------------------------------------

    def _settings(self) -> dict:
        return {
            "limits": np.asarray(self._limits, dtype=float),
            "grid_points": np.asarray(self._widths, dtype=np.int64),
            "bias_widths": np.asarray([v.biasWidth for v in self.variables], dtype=float),
            "scale_settings": np.asarray([v.scale_setting for v in self.variables], dtype=float),
            "periodic": np.asarray(self.periodic),
            "walkers": np.asarray(self.walkers),
            "bias_factor": np.asarray(self.bias_factor),
            "height": np.asarray(self.height),
            "deposit_interval": np.asarray(self.deposit_interval),
        }

    def save(self, path) -> None:
        """Write the bias grid, the deposit count, the frame records and the settings to ``path``
        (.npz), atomically."""
        path = os.fspath(path)
        buffer = io.BytesIO()
        np.savez(buffer, version=np.asarray(_FILE_VERSION), bias_grid=self.bias_grid,
                 deposits=np.asarray(self.deposits),
                 frame_bias=np.asarray(self.frame_bias, dtype=float).reshape(-1, self.walkers),
                 frame_c=np.asarray(self.frame_c, dtype=float), frame_steps=np.asarray(self.frame_steps, np.int64),
                 temperature=np.asarray(np.nan if self.temperature is None else self.temperature),
                 **self._settings())
        tmp = path + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, path)

    def load(self, path) -> "SharedBiasMetadynamics":
        """Continue from a :meth:`save`: the grid, deposits and records replace this object's.
        The file's settings must be this object's (an error names the one that differs)."""
        with np.load(os.fspath(path)) as data:
            kept = {key: data[key] for key in data.files}
        version = int(kept.get("version", 0))
        if version == 1 and "scale_settings" not in kept:  # format 1: no variable carried a scale
            kept["scale_settings"] = np.zeros(len(self.variables))
        if version not in (1, _FILE_VERSION):
            raise ValueError(f"{path}: bias file format {version}; this version of openmm-jamun reads 1 and "
                             f"{_FILE_VERSION}")
        for key, value in self._settings().items():
            if key not in kept or kept[key].shape != value.shape or not np.allclose(kept[key], value):
                label = "scale_settings (the bond-angle switch's s0; 0: none)" if key == "scale_settings" else key
                raise ValueError(f"{path}: the saved bias has {label} = {kept.get(key)}, this one {value}")
        saved_t = float(kept["temperature"])
        if not math.isnan(saved_t):
            if self.temperature is not None and not math.isclose(saved_t, self.temperature, rel_tol=1e-6):
                raise ValueError(f"{path}: the saved bias is at {saved_t} K, this one at {self.temperature} K")
            self.temperature = saved_t
        self.bias_grid = np.array(kept["bias_grid"], dtype=float)
        self.deposits = int(kept["deposits"])
        self.frame_bias = [row for row in np.asarray(kept["frame_bias"], dtype=float)]
        self.frame_c = [float(c) for c in kept["frame_c"]]
        self.frame_steps = [int(s) for s in kept["frame_steps"]]
        self._set_table(self._table)
        if self._simulation is not None:
            self._force.updateParametersInContext(self._simulation.context)
            _potential_changed(self._simulation)
        return self


def _potential_changed(simulation) -> None:
    """The bias changed where the walk stands: a Metropolis walk must not compare the next proposal
    with its cached energy under the old bias."""
    invalidate = getattr(simulation.integrator, "invalidate_cache", None)
    if invalidate is not None:
        invalidate()


def reweighting_weights(frame_bias, frame_c, temperature) -> np.ndarray:
    """Weights of biased frames for averages under the unbiased walk: w ∝ exp((V(s, t) − c(t))/kT).

    ``frame_bias`` [F, K]: the bias each walker felt at frame i (kJ/mol, before any deposit at that
    step); ``frame_c`` [F]: c(t_i) (kJ/mol, :meth:`SharedBiasMetadynamics.c_of_t`). Returns [F, K],
    summing to 1.

    This is the time-dependent estimator of Tiwary & Parrinello (J. Phys. Chem. B 119, 736, 2015),
    chosen over final-bias reweighting exp(V_final(s)/kT) because it uses every frame: a frame is
    weighted by the bias it was sampled under, less c(t), the bias's growth that is uniform in s
    (the reversible work of the well-tempered bias at time t), so frames from the filling phase
    count correctly instead of having to be discarded until the bias has converged.
    """
    bias = np.asarray(frame_bias, dtype=float)
    c = np.asarray(frame_c, dtype=float)
    if bias.ndim != 2 or c.shape != (bias.shape[0],):
        raise ValueError(f"frame_bias must be [frames, walkers] and frame_c [frames]; got {bias.shape}, {c.shape}")
    if bias.shape[0] == 0:
        raise ValueError("no frames recorded: give record_interval=")
    kT = kT_kj_per_mol(temperature_kelvin(temperature))
    log_w = (bias - c[:, None]) / kT
    w = np.exp(log_w - log_w.max())
    return w / w.sum()
