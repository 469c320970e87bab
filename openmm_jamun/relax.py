"""All-atom restrained relaxation of heavy-atom frames (the jumps x̂(y) of a walk).

A jump is a posterior mean over heavy atoms: no hydrogens, and blurred bond lengths. This module
turns such frames into all-atom frames a force field accepts, moving the heavy atoms as little as
it can (AlphaFold's amber relaxation, batched):

1. Hydrogens. OpenMM's Modeller (``data.build.add_hydrogens``, amber14, pH 7) builds the all-atom
   template once, at construction. Each frame's hydrogens are then carried from the template in
   the local frame of their parent heavy atom: origin at the parent P, axes from two bonded heavy
   atoms (P's first two heavy neighbours, or its one neighbour and that neighbour's first other
   heavy neighbour). A parent with three heavy neighbours (an sp3 centre such as CA) is mirrored
   when the frame's centre is the template's mirror image, so a D residue gets D hydrogens instead
   of a hydrogen pushed into its CB. This is per frame, in closed form: deterministic and
   independent of what else is in the batch.
2. A System per batch of B frames: amber14 (``amber14-all.xml``) in vacuum, or with
   ``implicit="gbn2"`` the GBn2 solvent of the reference MD, no constraints; B non-interacting
   copies of the molecule, placed on a grid far apart, with ``CutoffNonPeriodic`` and a cutoff
   longer than any distance inside a copy but shorter than the gap between copies. The reaction
   field dielectric is set to 1, which makes the cut-off Coulomb term q·q'(1/r − 1/r_c): the
   Coulomb force exactly, shifted by a constant energy. So each copy feels exactly the forces of
   the molecule alone with ``NoCutoff`` (checked in the tests) and no copy feels another. A batch
   of one uses ``NoCutoff`` directly. (Exceptions between copies would need B² n² entries;
   interaction groups do not exist for the GB force.)
3. Harmonic position restraints ½k|x − x₀|² on every heavy atom, x₀ the input frame; k defaults to
   AlphaFold's 10 kcal/mol/Å² = 4184 kJ/mol/nm². And torsion restraints k_t(1 − cos(θ − θ₀)) on the
   torsions the analysis histograms (φ, ψ, χ1-χ5 as mdtraj defines them), θ₀ the input frame's.
   With the position restraints alone, repairing a blurred frame's bonds and angles turns its
   torsions by 7-13° on average (vacuum amber14 pulls them towards its own minima) and moved VD's
   backbone JSD to the reference by +0.027; with k_t = 300 kJ/mol/rad² (a thermal spread of about
   5° at 300 K) they move 2-5° and the JSD by −0.001, for about 10% more time
   (``python benchmarks/relaxation.py runs/eval/VD --reference references/capped_2aa/VD
   --md-frames 0 [--torsion-restraint 0]``). 0 turns them off.
   Each chiral CA keeps the hand it has in the input and each non-proline peptide bond its side,
   trans or cis (one-sided restraints: ``SIDE_RESTRAINT_K`` says how and why).
4. ``openmm.LocalEnergyMinimizer`` (L-BFGS) until the RMS force of every copy is below the
   tolerance. OpenMM's own criterion is the RMS over the whole batch, which a batch could meet with
   one copy far off, so it is given the tolerance / √B, below which every copy is converged; a
   minimisation to convergence also has a MinimizationReporter stop it once the worst copy is below
   the tolerance. A batch first runs ``STAGE_ITERATIONS`` iterations without that reporter: most
   batches reach the limit before every copy converges, and the reporter's per-iteration callback
   (positions and gradient copied into Python) costs a large share of that stage's time.
5. AlphaFold's safeguard: a relaxed frame that still has a bond off its amber length or a clash
   (``analysis.validity``) has the restraints of the heavy atoms in those bonds and clashes
   released (and the torsion restraints through those atoms) and is minimised again from where it
   stands, in a batch of the frames of that round; a violation that survives its
   atoms' release frees the bonded heavy neighbours of every released atom in the next round; at
   most ``release_rounds`` rounds. A trans peptide bond bent past the ω tolerance (|ω| between 90° and 150°: a blurred
   amide plane, like a stretched bond) releases the atoms of its plane (α(i), C, O, N, α(i+1)) the same way. Chirality and cis
   peptide bonds (|ω| < 90°) release nothing: relaxation must not turn a mirrored residue into L
   (or an L one into D) or flip an ω, it reports them. (A nearly planar CA on the D side is
   finished L: ``MIRRORED_IMPROPER_DEG``.)

Frames that cannot be relaxed are kept and marked: a non-finite input frame, or one whose
minimisation fails, gets NaN positions, ``valid`` False and a reason. A frame too extended for the
batch's cutoff (atoms of a molecule that fell apart) is relaxed alone with ``NoCutoff``.
A residue amber14 cannot template is a ValueError at construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mdtraj
import numpy as np
import openmm
from openmm import app, unit
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path
from scipy.spatial.distance import pdist

from ._units import to_plain
from .analysis.torsions import TORSION_KINDS
from .analysis.validity import (BOND_TOLERANCE_NM, CHECKS, CLASH_SCALE, OMEGA_TOLERANCE_DEG, ValidityChecker,
                                _dihedrals, as_openmm_topology, frames_nm, failure_reasons)
from .data.build import add_hydrogens
from .platforms import get_platform
from .topology import is_heavy_atom

#: Implicit-solvent options: name → OpenMM force-field file added to amber14-all.xml.
IMPLICIT_SOLVENTS = {"gbn2": "implicit/gbn2.xml", "obc2": "implicit/obc2.xml"}
BASE_FORCE_FIELD = "amber14-all.xml"
#: AlphaFold's restraint constant, 10 kcal/mol/Å².
DEFAULT_RESTRAINT_K = 10.0 * unit.kilocalorie_per_mole / unit.angstrom**2
#: Torsion restraint constant on φ, ψ and χ (kJ/mol/rad²; module docstring, step 3).
DEFAULT_TORSION_RESTRAINT_K = 300.0 * unit.kilojoule_per_mole / unit.radian**2
#: Each chiral centre and each peptide bond the validity checks (X-Pro is not) keeps the side it has
#: in the input, by a one-sided restraint k·max(0, c₀ − (a cos θ + b sin θ))² (kJ/mol) on its torsion θ:
#: * a chiral CA's improper (CA, N, C, CB), about ±34° in a relaxed residue (+ for L), stays at least
#:   CHIRAL_IMPROPER_MIN_DEG on its side of 0 (a = 0, b = ±1). A blurred jump can have a
#:   nearly planar CA that the force field would otherwise finish on either side
#:   (tests/data/qw_jump_nearly_planar_ca.npz is one, from the card's QW walk). The side is the
#:   input frame's, except that a centre on the D side by less than MIRRORED_IMPROPER_DEG, nearer
#:   planar than a mirrored centre, is finished L (the hand the validity checks and the only one
#:   the models know): before minimisation its CA, with its hydrogen, is reflected through the
#:   plane of N, C and CB, which keeps every bond length and moves CA by twice its height over
#:   that plane, small for a nearly planar centre. In the default card's walks 56 of the 58 D-side
#:   centres of the jumps are of that kind (the jumps' L centres sit at a median 30-35°): the blur
#:   of an L centre rather than a mirrored one. ``RelaxResult.planar_centres_finished`` counts them.
#: * ω of a peptide bond that is trans-side in the input (|ω| > 90°) is held at |ω| ≥
#:   TRANS_OMEGA_MIN_DEG, 5° inside the validity's tolerance so that a minimised frame ends within
#:   it (a = −1: a bent amide plane is straightened, never turned over), and a
#:   cis-side one stays cis-side (a = 1, |ω| ≤ 90°, the side of amber's ω barrier it is on). Once the
#:   safeguard releases an amide's atoms, nothing else holds ω, and amber14 could turn a trans bond
#:   of the jump over (tests/data/aa_jump_trans.npz, from the card's AA walk).
#: It never turns a mirrored centre into L or a cis bond trans: those are the jump's, and reported.
CHIRAL_IMPROPER_MIN_DEG = 20.0
#: Half a relaxed L centre's improper (amber14: about 34°).
MIRRORED_IMPROPER_DEG = 17.0
TRANS_OMEGA_MIN_DEG = 180.0 - OMEGA_TOLERANCE_DEG + 5.0
CIS_OMEGA_MAX_DEG = 90.0
SIDE_RESTRAINT_K = 1000.0
#: RMS force at which a frame counts as relaxed: 14x below the RMS force of a thermal frame of the
#: reference MD (about 700 kJ/mol/nm for AA), and as valid as 10 kJ/mol/nm (the validity checks
#: do not change) at half the cost or less.
DEFAULT_TOLERANCE = 50.0 * unit.kilojoule_per_mole / unit.nanometer
#: Fresh L-BFGS runs after a minimisation to convergence (no iteration limit: not the first stage, not
#: with ``max_iterations``) that stopped above its tolerance (a line search that fails on the rounding
#: of single-precision forces, close to the minimum).
RESTARTS = 2
#: The safeguard's minimisations go this much further below the tolerance: a frame whose restraints
#: are released has little left but the force field to finish its repair, and an RMS force at the
#: tolerance, over the whole molecule, can still hide one bent amide.
SAFEGUARD_TOLERANCE_SCALE = 0.2
#: No bond of a molecule is longer than this in a frame the batch System can hold (nm); it bounds
#: every distance inside a copy by this times the longest bond path, which sets the cutoff.
MAX_BOND_NM = 0.3
_CUTOFF_MARGIN_NM = 0.2
_COPY_GAP_MARGIN_NM = 0.5
#: L-BFGS iterations of a batch before the frames still above the tolerance go on in a smaller batch
#: to convergence:
#: most frames of a capped dipeptide are below the default tolerance by then (VD: 90% by 38); it
#: saved about 10% of the relaxation's time on VD's samples against one long stage.
STAGE_ITERATIONS = 45


def replicate_topology(topology: app.Topology, copies: int) -> app.Topology:
    """A Topology of ``copies`` chains, each a copy of the one-chain ``topology`` (atoms and bonds)."""
    new = app.Topology()
    for _ in range(copies):
        chain = new.addChain()
        atom_map = {}
        for residue in topology.residues():
            new_residue = new.addResidue(residue.name, chain, residue.id, residue.insertionCode)
            for atom in residue.atoms():
                atom_map[atom] = new.addAtom(atom.name, atom.element, new_residue, atom.id)
        for bond in topology.bonds():
            new.addBond(atom_map[bond[0]], atom_map[bond[1]], bond.type, bond.order)
    return new


@dataclass
class RelaxResult:
    """Relaxed all-atom frames and what happened to each.

    ``positions`` [F, n_all, 3] nm in ``topology``'s atom order (NaN for a frame that could not be
    relaxed: see ``reasons``); ``heavy_atom_indices`` picks the input's heavy atoms out of them, in
    the input's order; ``rms_shift_nm`` [F] the RMS displacement of the heavy atoms from the input
    (no superposition: the restraints keep the frame in place); ``validity`` the per-frame checks of
    :mod:`openmm_jamun.analysis.validity` on the relaxed all-atom frames; ``reasons`` None for a
    valid frame, else why not (failed checks, "non-finite input", "minimisation failed: ...");
    ``released_atoms`` [F] how many restraints the safeguard released; ``rms_force`` [F] the final
    RMS force (kJ/mol/nm) of each frame, restraints included; ``planar_centres_finished`` [F] how
    many chiral CAs the input frame had nearly planar on the D side, which were finished L
    (``MIRRORED_IMPROPER_DEG``; 0 for a frame that could not be relaxed)."""

    positions: np.ndarray
    topology: app.Topology
    heavy_atom_indices: np.ndarray
    rms_shift_nm: np.ndarray
    validity: dict
    reasons: list
    released_atoms: np.ndarray
    rms_force: np.ndarray
    planar_centres_finished: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        return self.validity["valid"]

    def to_mdtraj(self):
        return mdtraj.Trajectory(self.positions.astype(np.float32), mdtraj.Topology.from_openmm(self.topology))

    def save(self, trajectory_path: str, topology_pdb_path: str) -> None:
        """Write every frame (NaN ones included: see ``valid`` and ``reasons``) to ``trajectory_path``
        (any format mdtraj writes: .dcd, .xtc, .h5, ...) and the all-atom topology with the first
        relaxed frame's positions to ``topology_pdb_path`` (OpenMM's PDB writer: standard names,
        CONECT records for the caps), which is what mdtraj or OpenMM need to load the trajectory."""
        finite = np.nonzero(np.isfinite(self.positions).all(axis=(1, 2)))[0]
        if len(finite) == 0:
            raise ValueError("no frame was relaxed (every frame has NaN positions): nothing to write a topology from")
        with open(topology_pdb_path, "w") as handle:
            app.PDBFile.writeFile(self.topology, self.positions[finite[0]] * unit.nanometer, handle, keepIds=True)
        self.to_mdtraj().save(trajectory_path)


def _force_field_files(implicit: str | None) -> tuple[str, ...]:
    """The OpenMM force-field files of a relaxation in vacuum (None) or ``implicit`` solvent."""
    return (BASE_FORCE_FIELD,) + ((IMPLICIT_SOLVENTS[implicit],) if implicit else ())


def _padded_to_power_of_two(indices):
    """``indices`` followed by copies of its first entry up to the next power of two, so that the
    batches of a relaxation come in few sizes (each size has its own Context)."""
    indices = list(indices)
    return np.array(indices + indices[:1] * ((1 << (len(indices) - 1).bit_length()) - len(indices)), dtype=np.int64)


def _largest_extent(frames: np.ndarray) -> np.ndarray:
    """Largest distance between two atoms of each frame [F, n, 3] -> [F]."""
    return np.array([pdist(frame).max() if len(frame) > 1 else 0.0 for frame in frames])


class _StopWhenEveryCopyConverged(openmm.MinimizationReporter):
    """Stops L-BFGS once the RMS gradient of every copy is below ``tolerance``."""

    def __init__(self, copies: int, tolerance: float):
        super().__init__()
        self.copies, self.tolerance = copies, tolerance

    def report(self, iteration, x, grad, args):
        gradient = np.asarray(grad).reshape(self.copies, -1)
        return bool(np.sqrt(np.mean(gradient * gradient, axis=1)).max() < self.tolerance)


class Relaxer:
    """Restrained all-atom relaxation for one peptide (the module docstring says how).

    Parameters
    ----------
    topology : OpenMM or mdtraj Topology
        One molecule (one chain), heavy atoms only or all atoms. Frames given to :meth:`relax`
        have its heavy atoms in its order (or all its atoms, when it has hydrogens).
    positions : [n_atoms, 3] nm or quantity
        Any conformation of ``topology`` (a jump or a built structure): Modeller places the
        template's hydrogens on it. Only the template's hydrogens depend on it (their positions
        relative to their parents, and histidine's tautomer).
    implicit : None or "gbn2" (or "obc2")
        Vacuum amber14 (the default) or amber14 with that implicit solvent.
    restraint_k : energy/length² quantity
        Heavy-atom restraint constant (default 10 kcal/mol/Å² = 4184 kJ/mol/nm²).
    torsion_restraint_k : energy/angle² quantity
        Constant of the φ, ψ, χ restraints to the input's torsions (default 300 kJ/mol/rad²; 0: none).
    tolerance : energy/length quantity
        Minimise until every frame's RMS force is below this (default 50 kJ/mol/nm); the safeguard's
        rounds go to ``SAFEGUARD_TOLERANCE_SCALE`` (0.2) times it. Below about 2 kJ/mol/nm the
        single-precision forces of the CPU platform stop L-BFGS first.
    max_iterations : int
        L-BFGS iterations per minimisation (0: until converged).
    release_rounds : int
        Rounds of AlphaFold's safeguard (release violators' restraints, minimise again; default 8:
        a bent peptide bond can need several shells of its neighbours freed, and only the frames
        still in violation pay for a round).
    batch_size : int
        Frames minimised together in one System.
    platform, threads, properties
        OpenMM platform name ("CPU", "Reference", "CUDA", "OpenCL") or Platform; CPU threads
        (default 1: deterministic, and the CPU platform's sums depend on the thread count);
        extra platform properties.
    """

    def __init__(self, topology, positions, *, implicit: str | None = None, restraint_k=DEFAULT_RESTRAINT_K,
                 torsion_restraint_k=DEFAULT_TORSION_RESTRAINT_K, tolerance=DEFAULT_TOLERANCE,
                 max_iterations: int = 0, release_rounds: int = 8,
                 batch_size: int = 64, platform="CPU", threads: int | None = 1, properties: dict | None = None):
        topology = as_openmm_topology(topology)
        if topology.getNumChains() != 1:
            raise ValueError(f"the topology has {topology.getNumChains()} chains: a Relaxer is for one molecule. "
                             "Relax the chains of a K-chain walk as separate frames (reshape [F, K·n, 3] "
                             "frames to [F·K, n, 3])")
        if implicit is not None and implicit not in IMPLICIT_SOLVENTS:
            raise ValueError(f"implicit must be None (vacuum) or one of {sorted(IMPLICIT_SOLVENTS)}; got {implicit!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        if int(release_rounds) < 0 or int(max_iterations) < 0:
            raise ValueError("release_rounds and max_iterations must be non-negative")
        self.implicit = implicit
        self.force_field_files = _force_field_files(implicit)
        self.restraint_k = to_plain(restraint_k, unit.kilojoule_per_mole / unit.nanometer**2, "restraint_k")
        self.tolerance = to_plain(tolerance, unit.kilojoule_per_mole / unit.nanometer, "tolerance")
        self.torsion_restraint_k = to_plain(torsion_restraint_k, unit.kilojoule_per_mole / unit.radian**2,
                                            "torsion_restraint_k")
        if self.restraint_k < 0 or self.torsion_restraint_k < 0 or self.tolerance <= 0:
            raise ValueError("restraint_k and torsion_restraint_k must be >= 0 and tolerance > 0")
        self.max_iterations = int(max_iterations)
        self.release_rounds = int(release_rounds)
        self.batch_size = int(batch_size)
        if isinstance(platform, openmm.Platform):
            self.platform, defaults = platform, ({"Threads": str(int(threads))} if threads and
                                                 platform.getName() == "CPU" else {})
        else:
            self.platform, defaults = get_platform(platform, threads)
        self.properties = {**defaults, **(properties or {})}

        input_atoms = list(topology.atoms())
        xyz = frames_nm(positions)[0]
        if xyz.shape != (len(input_atoms), 3) or not np.isfinite(xyz).all():
            raise ValueError(f"positions must be {len(input_atoms)} finite atoms (nm); got shape {xyz.shape}")
        self.input_has_hydrogens = any(not is_heavy_atom(atom) for atom in input_atoms)
        if self.input_has_hydrogens:
            self.topology, template_xyz = topology, xyz
        else:
            try:
                modeller = add_hydrogens(topology, xyz * unit.nanometer)
            except ValueError as error:
                raise ValueError(f"cannot add hydrogens with amber14 ({error}): every residue needs an amber14 "
                                 "template") from None
            self.topology = modeller.topology
            template_xyz = np.array(modeller.getPositions().value_in_unit(unit.nanometer), dtype=np.float64)
        self._forcefield = app.ForceField(*self.force_field_files)
        try:
            self._single_system = self._create_system(self.topology, app.NoCutoff, None)
        except ValueError as error:
            raise ValueError(f"amber14 cannot template this molecule ({error})") from None

        atoms = list(self.topology.atoms())
        self.n_atoms = len(atoms)
        key = {(atom.residue.index, atom.name): atom.index for atom in atoms}
        self.heavy_atom_indices = np.array([key[(atom.residue.index, atom.name)] for atom in input_atoms
                                            if is_heavy_atom(atom)], dtype=np.int64)
        self.n_input_heavy = len(self.heavy_atom_indices)
        self.n_input_atoms = len(input_atoms)
        self._input_to_template = np.array([key[(atom.residue.index, atom.name)] for atom in input_atoms])
        self._input_heavy = np.array([i for i, atom in enumerate(input_atoms) if is_heavy_atom(atom)], dtype=np.int64)
        self._template_xyz = template_xyz
        self._hydrogen_plan = self._plan_hydrogens(atoms, template_xyz)
        self.checker = ValidityChecker(self.topology)
        # torsions that keep their side (SIDE_RESTRAINT_K): the improper (CA, N, C, CB) of each chiral
        # centre, whose sign is its hand (L: +33°), then ω of each peptide bond
        impropers = np.asarray(self.checker.chiral_quads, dtype=np.int64).reshape(-1, 4)[:, [1, 0, 2, 3]]
        self._n_impropers = len(impropers)
        moving = {int(quartet[0]): [int(quartet[0])] for quartet in impropers}  # a CA and its hydrogens
        for a, b in self.topology.bonds():
            for centre, other in ((a, b), (b, a)):
                if centre.index in moving and not is_heavy_atom(other):
                    moving[centre.index].append(other.index)
        self._centre_atoms = [moving[int(quartet[0])] for quartet in impropers]
        omegas = np.asarray(self.checker.omega_quads, dtype=np.int64).reshape(-1, 4)
        self._side_quartets = np.concatenate([impropers, omegas])
        # each checked peptide bond's plane: its ω atoms α(i), C(i), N(i+1), α(i+1) and the carbonyl O(i)
        carbonyl_o = {}
        for a, b in self.topology.bonds():
            for c, o in ((a, b), (b, a)):
                if c.name == "C" and o.element is not None and o.element.symbol == "O" and o.residue is c.residue:
                    carbonyl_o[c.index] = o.index
        self._heavy_neighbours = {atom.index: [] for atom in atoms}
        for a, b in self.topology.bonds():
            if is_heavy_atom(a) and is_heavy_atom(b):
                self._heavy_neighbours[a.index].append(b.index)
                self._heavy_neighbours[b.index].append(a.index)
        self._heavy_neighbours = {k: np.array(v, dtype=np.int64) for k, v in self._heavy_neighbours.items()}
        self._peptide_units = np.array([[*quad, carbonyl_o.get(int(quad[1]), int(quad[1]))]
                                        for quad in self.checker.omega_quads], dtype=np.int64).reshape(-1, 5)
        self._parent = np.arange(self.n_atoms)  # heavy atom responsible for each atom (hydrogens: their parent)
        for a, b in self.topology.bonds():
            if not is_heavy_atom(a) and is_heavy_atom(b):
                self._parent[a.index] = b.index
            elif not is_heavy_atom(b) and is_heavy_atom(a):
                self._parent[b.index] = a.index
        self._restrained = np.array([is_heavy_atom(atom) for atom in atoms])
        self._torsions = self._restrained_torsions() if self.torsion_restraint_k > 0 else np.zeros((0, 4), np.int64)

        # distances inside a copy are at most MAX_BOND_NM per bond along the longest bond path

        pairs = np.array([(a.index, b.index) for a, b in self.topology.bonds()], dtype=np.int64).reshape(-1, 2)
        hops = shortest_path(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                                        shape=(self.n_atoms, self.n_atoms)), directed=False, unweighted=True)
        if not np.isfinite(hops).all():
            raise ValueError("the topology is not one connected molecule (an atom without bonds to the rest)")
        self.max_extent_nm = MAX_BOND_NM * float(hops.max())
        self.cutoff_nm = self.max_extent_nm + _CUTOFF_MARGIN_NM
        self.copy_spacing_nm = self.cutoff_nm + 2 * self.max_extent_nm + _COPY_GAP_MARGIN_NM
        self._contexts: dict[int, tuple] = {}

    # ----- set-up ---------------------------------------------------------------------------------------

    def _create_system(self, topology, method, cutoff_nm):
        kwargs = {"nonbondedMethod": method, "constraints": None, "rigidWater": False}
        if cutoff_nm is not None:
            kwargs["nonbondedCutoff"] = cutoff_nm * unit.nanometer
        kwargs["removeCMMotion"] = False  # no dynamics here: it would only cost time
        system = self._forcefield.createSystem(topology, **kwargs)
        for force in system.getForces():
            if isinstance(force, openmm.NonbondedForce):
                force.setReactionFieldDielectric(1.0)  # cut-off Coulomb = exact Coulomb force (module docstring)
        return system

    def _set_torsion_parameters(self, context, force, quartets: np.ndarray, parameters: np.ndarray) -> None:
        """Per-torsion ``parameters`` [copies, T, P] of a CustomTorsionForce over ``quartets`` [T, 4] of
        every copy (the order :meth:`_context` added them in), pushed into ``context``."""
        index = 0
        for copy, rows in enumerate(parameters):
            for quartet, row in zip(quartets + copy * self.n_atoms, rows):
                force.setTorsionParameters(index, *(int(a) for a in quartet), [float(v) for v in row])
                index += 1
        force.updateParametersInContext(context)

    def _side_parameters(self, anchors: np.ndarray) -> np.ndarray:
        """(a, b, c0) [F, S, 3] of the side restraint of each quartet in ``self._side_quartets`` for frames
        ``anchors``: the side each torsion is on in them (module constants)."""
        theta = _dihedrals(anchors, self._side_quartets)
        out = np.zeros(theta.shape + (3,))
        out[:, :self._n_impropers, 1] = np.where(theta[:, :self._n_impropers] < 0, -1.0, 1.0)
        out[:, :self._n_impropers, 2] = math.sin(math.radians(CHIRAL_IMPROPER_MIN_DEG))
        trans = np.abs(theta[:, self._n_impropers:]) > math.radians(CIS_OMEGA_MAX_DEG)
        out[:, self._n_impropers:, 0] = np.where(trans, -1.0, 1.0)
        out[:, self._n_impropers:, 2] = np.where(trans, -math.cos(math.radians(TRANS_OMEGA_MIN_DEG)),
                                                 math.cos(math.radians(CIS_OMEGA_MAX_DEG)))
        return out

    def _turn_nearly_planar_centres(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``xyz`` [F, n_all, 3] (template order; hydrogens may be unset) with every chiral CA that
        lies on the D side of planar by less than MIRRORED_IMPROPER_DEG turned L: the CA and its
        hydrogens reflected through the plane of its N, C and CB, which keeps their bond lengths and
        moves the CA by twice its height over that plane. Minimisation then starts on the hand the
        centre is finished with. Returns the frames and [F] how many centres each had turned."""
        if not self._n_impropers:
            return xyz, np.zeros(len(xyz), dtype=np.int64)
        theta = _dihedrals(xyz, self._side_quartets[:self._n_impropers])
        turn = (theta < 0) & (theta >= -math.radians(MIRRORED_IMPROPER_DEG))
        out = xyz.copy()
        for column in np.nonzero(turn.any(axis=0))[0]:
            _, n, c, cb = self._side_quartets[column]
            frames = turn[:, column]
            normal = np.cross(out[frames, c] - out[frames, n], out[frames, cb] - out[frames, n])
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            for atom in self._centre_atoms[column]:
                height = np.sum((out[frames, atom] - out[frames, n]) * normal, axis=-1, keepdims=True)
                out[frames, atom] -= 2.0 * height * normal
        return out, turn.sum(axis=1)

    def _restrained_torsions(self) -> np.ndarray:
        """The quartets [T, 4] of the φ, ψ and χ torsions of ``self.topology`` (mdtraj's definitions)."""
        one = mdtraj.Trajectory(np.zeros((1, self.n_atoms, 3), np.float32), mdtraj.Topology.from_openmm(self.topology))
        quartets = [getattr(mdtraj, f"compute_{kind}")(one)[0] for kind in TORSION_KINDS]
        return np.concatenate([q.reshape(-1, 4) for q in quartets]).astype(np.int64)

    def _plan_hydrogens(self, atoms, template_xyz):
        """Per heavy parent with hydrogens: (parent, a, b, c or -1, hydrogen indices, local coordinates,
        template handedness)."""
        heavy_neighbours = {atom.index: [] for atom in atoms}
        hydrogens = {atom.index: [] for atom in atoms}
        for x, y in self.topology.bonds():
            for p, q in ((x, y), (y, x)):
                if is_heavy_atom(p):
                    (hydrogens if not is_heavy_atom(q) else heavy_neighbours)[p.index].append(q.index)
        plan = []
        for parent in sorted(p for p, hs in hydrogens.items() if hs):
            neighbours = sorted(heavy_neighbours[parent])
            if len(neighbours) >= 2:
                a, b = neighbours[0], neighbours[1]
            elif len(neighbours) == 1:
                a = neighbours[0]
                others = sorted(k for k in heavy_neighbours[a] if k != parent)
                if not others:
                    raise ValueError(f"cannot place the hydrogens of atom {parent}: no second heavy atom near it")
                b = others[0]
            else:
                raise ValueError(f"atom {parent} ({atoms[parent].name}) has hydrogens but no heavy neighbour")
            c = neighbours[2] if len(neighbours) >= 3 else -1
            members = np.array(sorted(hydrogens[parent]), dtype=np.int64)
            axes = self._local_axes(template_xyz[None], parent, a, b)[0]
            local = (template_xyz[members] - template_xyz[parent]) @ axes.T  # coordinates along e1, e2, e3
            handed = float(np.sign((template_xyz[c] - template_xyz[parent]) @ axes[2])) if c >= 0 else 0.0
            plan.append((parent, a, b, c, members, local, handed))
        return plan

    @staticmethod
    def _local_axes(xyz: np.ndarray, parent: int, a: int, b: int) -> np.ndarray:
        """Orthonormal axes [F, 3, 3] (rows e1, e2, e3): e1 along parent→a, e2 towards b."""
        e1 = xyz[:, a] - xyz[:, parent]
        e1 = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
        u = xyz[:, b] - xyz[:, parent]
        u = u - np.sum(u * e1, -1, keepdims=True) * e1
        norm = np.linalg.norm(u, axis=-1, keepdims=True)
        degenerate = norm[:, 0] < 1e-9  # b on the parent-a line: any perpendicular will do
        if degenerate.any():
            fallback = np.cross(e1[degenerate], np.where(np.abs(e1[degenerate, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
            u[degenerate] = fallback
            norm[degenerate] = np.linalg.norm(fallback, axis=-1, keepdims=True)
        e2 = u / norm
        return np.stack([e1, e2, np.cross(e1, e2)], axis=1)

    def place_hydrogens(self, heavy_xyz: np.ndarray) -> np.ndarray:
        """All-atom frames [F, n_all, 3] (nm) from heavy-atom frames [F, n_heavy, 3] in the input's
        heavy-atom order: heavy atoms as given, hydrogens carried from the template (module docstring)."""
        return self._add_hydrogens(self._heavy_in_template_order(heavy_xyz))

    def _heavy_in_template_order(self, heavy_xyz: np.ndarray) -> np.ndarray:
        """[F, n_all, 3] frames with the heavy atoms of ``heavy_xyz`` (input order) in place, hydrogens at 0."""
        out = np.zeros((len(heavy_xyz), self.n_atoms, 3))
        out[:, self.heavy_atom_indices] = np.asarray(heavy_xyz, dtype=np.float64)
        return out

    def _add_hydrogens(self, out: np.ndarray) -> np.ndarray:
        """``out`` [F, n_all, 3] (template order) with its hydrogens placed from its heavy atoms, in place."""
        for parent, a, b, c, hydrogen_indices, local, handed in self._hydrogen_plan:
            axes = self._local_axes(out, parent, a, b)
            coefficients = np.broadcast_to(local, (len(out),) + local.shape).copy()
            if c >= 0:  # an sp3 centre: mirror its hydrogens with it
                mirrored = np.sign(np.sum((out[:, c] - out[:, parent]) * axes[:, 2], -1)) == -handed
                coefficients[mirrored, :, 2] *= -1
            out[:, hydrogen_indices] = out[:, parent, None] + np.einsum("fhk,fkd->fhd", coefficients, axes)
        return out

    def _context(self, copies: int):
        """(Context, position restraint force, torsion restraint force or None, side restraint force
        (chiral impropers and ω) or None, per-copy offsets) for a batch of ``copies`` frames, built once."""
        if copies not in self._contexts:
            if copies == 1:
                system = self._create_system(self.topology, app.NoCutoff, None)
                offsets = np.zeros((1, 3))
            else:
                system = self._create_system(replicate_topology(self.topology, copies), app.CutoffNonPeriodic,
                                             self.cutoff_nm)
                side = math.ceil(copies ** (1 / 3))
                grid = np.array([(k % side, (k // side) % side, k // (side * side)) for k in range(copies)], float)
                offsets = grid * self.copy_spacing_nm
            restraint = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
            for name in ("x0", "y0", "z0", "k"):
                restraint.addPerParticleParameter(name)
            for copy in range(copies):
                for atom in np.nonzero(self._restrained)[0]:
                    restraint.addParticle(int(copy * self.n_atoms + atom), [0.0, 0.0, 0.0, 0.0])
            system.addForce(restraint)
            torsion_restraint = None
            if len(self._torsions):
                torsion_restraint = openmm.CustomTorsionForce("k_t*(1-cos(theta-theta0))")
                torsion_restraint.addPerTorsionParameter("theta0")
                torsion_restraint.addPerTorsionParameter("k_t")
                for copy in range(copies):
                    for quartet in self._torsions + copy * self.n_atoms:
                        torsion_restraint.addTorsion(*(int(a) for a in quartet), [0.0, 0.0])
                system.addForce(torsion_restraint)
            side_restraint = None
            if len(self._side_quartets):
                side_restraint = openmm.CustomTorsionForce("k_side*step(d)*d^2; d = c0 - a*cos(theta) - b*sin(theta)")
                side_restraint.addGlobalParameter("k_side", SIDE_RESTRAINT_K)
                for name in ("a", "b", "c0"):
                    side_restraint.addPerTorsionParameter(name)
                for copy in range(copies):
                    for quartet in self._side_quartets + copy * self.n_atoms:
                        side_restraint.addTorsion(*(int(a) for a in quartet), [0.0, 0.0, -2.0])
                system.addForce(side_restraint)
            context = openmm.Context(system, openmm.VerletIntegrator(0.001), self.platform, self.properties)
            if len(self._contexts) >= 8:  # a batch size and its stages' powers of two
                self._contexts.pop(next(iter(self._contexts)))
            self._contexts[copies] = (context, restraint, torsion_restraint, side_restraint, offsets)
        return self._contexts[copies]

    # ----- relaxation -----------------------------------------------------------------------------------

    def _minimise(self, start: np.ndarray, anchors: np.ndarray, released: np.ndarray, iterations: int | None = None,
                  tolerance: float | None = None):
        """Minimise frames [b, n_all, 3] together with heavy atoms restrained to ``anchors`` (same shape)
        except where ``released`` [b, n_all], for at most ``iterations`` L-BFGS iterations (default
        ``max_iterations``) or until every frame's RMS force is below ``tolerance`` (default the
        Relaxer's); returns (positions [b, n_all, 3], RMS force [b])."""
        iterations = self.max_iterations if iterations is None else iterations
        tolerance = self.tolerance if tolerance is None else tolerance
        copies = len(start)
        context, restraint, torsion_restraint, side_restraint, offsets = self._context(copies)
        centres = anchors[:, self._restrained].mean(axis=1)
        shift = offsets[:, None, :] - centres[:, None, :]
        restrained = np.nonzero(self._restrained)[0]
        index = 0
        for copy in range(copies):
            for atom in restrained:
                x0 = anchors[copy, atom] + shift[copy, 0]
                k = 0.0 if released[copy, atom] else self.restraint_k
                restraint.setParticleParameters(index, int(copy * self.n_atoms + atom), [*x0, k])
                index += 1
        restraint.updateParametersInContext(context)
        if torsion_restraint is not None:
            free = released[:, self._torsions].any(axis=-1)  # a torsion through a released atom is free too
            parameters = np.stack([_dihedrals(anchors, self._torsions),
                                   np.where(free, 0.0, self.torsion_restraint_k)], axis=-1)
            self._set_torsion_parameters(context, torsion_restraint, self._torsions, parameters)
        if side_restraint is not None:
            self._set_torsion_parameters(context, side_restraint, self._side_quartets, self._side_parameters(anchors))
        context.setPositions((start + shift).reshape(-1, 3))
        for attempt in range(1 + (0 if iterations else RESTARTS)):
            if copies == 1 or iterations:
                # a limited stage: OpenMM's criterion alone (module docstring, step 4)
                openmm.LocalEnergyMinimizer.minimize(context, tolerance / math.sqrt(copies), iterations)
            else:
                reporter = _StopWhenEveryCopyConverged(copies, tolerance)
                # OpenMM's own criterion (RMS over the batch) below tolerance/√B implies every copy is below it
                openmm.LocalEnergyMinimizer.minimize(context, tolerance / math.sqrt(copies), iterations, reporter)
            state = context.getState(getPositions=True, getForces=True)
            forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            rms_force = np.sqrt(np.mean(np.asarray(forces).reshape(copies, -1) ** 2, axis=1))
            if not rms_force.max() >= tolerance:
                break
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).reshape(copies, self.n_atoms, 3)
        return np.asarray(positions) - shift, rms_force

    def _minimise_staged(self, start, anchors, released, tolerance: float | None = None):
        """:meth:`_minimise_or_split` in two stages: the batch for ``STAGE_ITERATIONS`` iterations, then
        the frames not yet below the tolerance on their own, in a smaller batch (a power of two,
        padded with copies of one of them, so that few Context sizes are built), to convergence. One
        L-BFGS run over a batch waits for its slowest frame, and most frames converge in a fraction of
        its iterations. With ``max_iterations`` set, one stage: the limit is per minimisation."""
        tolerance = self.tolerance if tolerance is None else tolerance
        if len(start) <= 2 or self.max_iterations:
            return self._minimise_or_split(start, anchors, released, tolerance=tolerance)
        positions, rms_force, failures = self._minimise_or_split(start, anchors, released, STAGE_ITERATIONS, tolerance)
        left = [k for k in range(len(start)) if failures[k] is None and not rms_force[k] < tolerance]
        if left:
            picked = _padded_to_power_of_two(left)
            more = self._minimise_or_split(positions[picked], anchors[picked], released[picked], tolerance=tolerance)
            for j, k in enumerate(left):
                positions[k], rms_force[k], failures[k] = more[0][j], more[1][j], more[2][j]
        return positions, rms_force, failures

    def _minimise_or_split(self, start, anchors, released, iterations: int | None = None,
                           tolerance: float | None = None):
        """:meth:`_minimise`, and where a batch fails (a NaN energy), each of its frames alone, so one
        bad frame fails alone; returns positions, RMS force and a failure message per frame."""
        try:
            positions, rms_force = self._minimise(start, anchors, released, iterations, tolerance)
            if np.isfinite(positions).all():
                return positions, rms_force, [None] * len(start)
            if len(start) == 1:
                return positions, rms_force, ["minimisation failed: non-finite positions"]
        except openmm.OpenMMException as error:
            if len(start) == 1:
                return np.full_like(start, np.nan), np.full(1, np.nan), [f"minimisation failed: {error}"]
        parts = [self._minimise_or_split(start[k:k + 1], anchors[k:k + 1], released[k:k + 1], iterations, tolerance)
                 for k in range(len(start))]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                [p[2][0] for p in parts])

    def _violators(self, positions: np.ndarray, validity: dict) -> list[np.ndarray]:
        """Per frame: the heavy atoms in a bond off its length, in a clash, or of a bent trans peptide
        bond (empty when none)."""
        atoms_per_frame = []
        lengths = np.linalg.norm(positions[:, self.checker.bonds[:, 0]] - positions[:, self.checker.bonds[:, 1]], axis=-1)
        bad_bonds = np.abs(lengths - self.checker.r0) > BOND_TOLERANCE_NM
        pairs = self.checker.clash_pairs
        if len(pairs):
            distances = np.linalg.norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], axis=-1)
            bad_pairs = distances < CLASH_SCALE * self.checker.contact_nm
        quads = self.checker.omega_quads
        bent = np.zeros((len(positions), len(quads)), dtype=bool)
        if len(quads):
            omega = np.abs(np.degrees(_dihedrals(positions, quads)))
            bent = (omega > 90.0) & (omega < 180.0 - OMEGA_TOLERANCE_DEG)  # trans, bent; cis is left alone
        for k in range(len(positions)):
            if validity["bonds"][k] and validity["clashes"][k] and not bent[k].any():
                atoms_per_frame.append(np.zeros(0, dtype=np.int64))
                continue
            atoms = [self.checker.bonds[bad_bonds[k]].ravel(), self._peptide_units[bent[k]].ravel()]
            if len(pairs):
                atoms.append(pairs[bad_pairs[k]].ravel())
            atoms_per_frame.append(np.unique(self._parent[np.concatenate(atoms)]))
        return atoms_per_frame

    def relax(self, frames) -> RelaxResult:
        """Relax frames [F, n, 3] (nm, or a quantity, or an mdtraj Trajectory): n the input topology's
        heavy atoms (hydrogens placed here) or, for an all-atom input topology, all of its atoms
        (their hydrogens kept as the start). Returns a :class:`RelaxResult` with every frame."""
        xyz = frames_nm(frames)
        count = len(xyz)
        if xyz.shape[1] == self.n_input_heavy:
            heavy = xyz
            given_all_atoms = None
        elif self.input_has_hydrogens and xyz.shape[1] == self.n_input_atoms:
            heavy = xyz[:, self._input_heavy]
            given_all_atoms = np.empty((count, self.n_atoms, 3))
            given_all_atoms[:, self._input_to_template] = xyz
        else:
            raise ValueError(f"frames have {xyz.shape[1]} atoms; this Relaxer takes {self.n_input_heavy} heavy atoms"
                             + (f" or all {self.n_input_atoms} atoms" if self.input_has_hydrogens else ""))
        finite = np.isfinite(xyz).all(axis=(1, 2))
        positions = np.full((count, self.n_atoms, 3), np.nan)
        rms_force = np.full(count, np.nan)
        released = np.zeros((count, self.n_atoms), dtype=bool)
        failures: list[str | None] = [None if ok else "non-finite input" for ok in finite]
        planar = np.zeros(count, dtype=np.int64)

        todo = np.nonzero(finite)[0]
        if len(todo):
            start, planar[todo] = self._turn_nearly_planar_centres(
                self._heavy_in_template_order(heavy[todo]) if given_all_atoms is None else given_all_atoms[todo])
            if given_all_atoms is None:
                self._add_hydrogens(start)
            anchors = start.copy()  # the restraints hold the frame with its nearly planar centres turned
            # frames too extended for the batch's cutoff are relaxed alone (NoCutoff)
            extent = _largest_extent(start)
            alone = extent > self.max_extent_nm
            order = [np.nonzero(~alone)[0], np.nonzero(alone)[0]]
            for group, size in ((order[0], self.batch_size), (order[1], 1)):
                for first in range(0, len(group), size):
                    chunk = group[first:first + size]
                    out, force, messages = self._minimise_staged(start[chunk], anchors[chunk], released[todo[chunk]])
                    positions[todo[chunk]], rms_force[todo[chunk]] = out, force
                    for k, message in zip(todo[chunk], messages):
                        failures[k] = message
            # AlphaFold's safeguard: each round, the frames still in violation minimised again together
            rows = {int(k): row for row, k in enumerate(todo)}  # frame -> its row in start/anchors/alone
            for _ in range(self.release_rounds):
                candidates = np.array([k for k in todo if failures[k] is None], dtype=np.int64)
                if len(candidates) == 0:
                    break
                validity = self.checker(positions[candidates])
                violators = self._violators(positions[candidates], validity)
                again = []
                for k, atoms in zip(candidates, violators):
                    fresh = atoms[~released[k, atoms]]
                    if len(fresh) == 0 and len(atoms):  # released and still in violation: free the next shell
                        freed = np.nonzero(released[k] & self._restrained)[0]
                        around = np.unique(np.concatenate([self._heavy_neighbours[a] for a in freed]))
                        fresh = around[~released[k, around]]
                    if len(fresh):
                        released[k, fresh] = True
                        again.append(int(k))
                if not again:
                    break
                together = [k for k in again if not alone[rows[k]]]
                batches = [together[first:first + self.batch_size]
                           for first in range(0, len(together), self.batch_size)]
                for chunk in batches + [[k] for k in again if alone[rows[k]]]:
                    chunk = np.array(chunk, dtype=np.int64)
                    picked = _padded_to_power_of_two(chunk)
                    out, force, messages = self._minimise_staged(
                        positions[picked], anchors[[rows[int(k)] for k in picked]], released[picked],
                        self.tolerance * SAFEGUARD_TOLERANCE_SCALE)
                    positions[chunk], rms_force[chunk] = out[:len(chunk)], force[:len(chunk)]
                    for k, message in zip(chunk, messages):
                        failures[k] = message
        for k in range(count):
            if failures[k] is not None:
                positions[k] = np.nan
                planar[k] = 0
        validity = self.checker(positions)
        reasons = failure_reasons(validity)
        for k in range(count):
            if failures[k] is not None:
                reasons[k] = failures[k]
        shift = positions[:, self.heavy_atom_indices] - heavy
        rms_shift = np.sqrt(np.mean(np.sum(shift * shift, axis=-1), axis=1))
        return RelaxResult(
            positions=positions, topology=self.topology, heavy_atom_indices=self.heavy_atom_indices,
            rms_shift_nm=rms_shift, validity=validity, reasons=reasons, released_atoms=released.sum(axis=1),
            rms_force=rms_force, planar_centres_finished=planar, settings=self.settings())

    def method(self) -> dict:
        """What decides the relaxed frames (JSON-friendly): :func:`relaxation_method` of this Relaxer's settings."""
        return relaxation_method(self.implicit, self.restraint_k, self.torsion_restraint_k, self.tolerance,
                                 self.max_iterations, self.release_rounds)

    def settings(self) -> dict:
        """JSON-friendly description of this relaxation: :meth:`method`, and how it ran."""
        return {**self.method(), "batch_size": self.batch_size, "platform": self.platform.getName(),
                "properties": dict(self.properties), "checks": list(CHECKS)}


def relaxation_method(implicit: str | None = None, restraint_k: float = DEFAULT_RESTRAINT_K,
                      torsion_restraint_k: float = DEFAULT_TORSION_RESTRAINT_K, tolerance: float = DEFAULT_TOLERANCE,
                      max_iterations: int = 0, release_rounds: int = 8) -> dict:
    """Every setting and constant that decides how a frame is relaxed (JSON-friendly), for the
    Relaxer's arguments (plain numbers in kJ/mol, nm, rad, or quantities; the defaults are its
    defaults): a relaxation resumed under another method would mix two kinds of frames."""
    return {"force_field": list(_force_field_files(implicit)),
            "restraint_k_kj_per_mol_nm2": to_plain(restraint_k, unit.kilojoule_per_mole / unit.nanometer**2,
                                                   "restraint_k"),
            "torsion_restraint_k_kj_per_mol_rad2": to_plain(torsion_restraint_k,
                                                            unit.kilojoule_per_mole / unit.radian**2,
                                                            "torsion_restraint_k"),
            "restrained_torsions": list(TORSION_KINDS),
            "side_restraint": {"k_kj_per_mol": SIDE_RESTRAINT_K, "chiral_improper_min_deg": CHIRAL_IMPROPER_MIN_DEG,
                               "mirrored_improper_deg": MIRRORED_IMPROPER_DEG,
                               "nearly_planar_centre_turned": "CA reflected through its N, C, CB plane",
                               "trans_omega_min_deg": TRANS_OMEGA_MIN_DEG, "cis_omega_max_deg": CIS_OMEGA_MAX_DEG},
            "tolerance_kj_per_mol_nm": to_plain(tolerance, unit.kilojoule_per_mole / unit.nanometer, "tolerance"),
            "max_iterations": int(max_iterations), "release_rounds": int(release_rounds),
            "stage_iterations": STAGE_ITERATIONS, "restarts": RESTARTS,
            "safeguard_tolerance_scale": SAFEGUARD_TOLERANCE_SCALE}
