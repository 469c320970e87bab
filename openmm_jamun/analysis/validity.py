"""Chemical validity of peptide frames: the one definition used for raw jumps, relaxed frames and tests.

A frame is valid when it passes all four checks:

* ``bonds``: every covalent bond is within 0.1 Å (``BOND_TOLERANCE_NM``) of its equilibrium length
  r0 in amber14 (ff14SB), the ``HarmonicBondForce`` r0 that ``ForceField.createSystem`` gives the
  bond (built with ``constraints=None`` so bonds to hydrogen keep their harmonic term too).
  For an all-atom topology that System is built from the topology itself; a heavy-atom topology
  (a raw jump has no hydrogens) gets an all-atom template first (``data.build.add_hydrogens``,
  OpenMM's Modeller, at pH 7, on one frame's positions) and only the bonds between the heavy atoms
  present are checked. r0 depends only on the amber atom types, not on the frame used, except for
  histidine, whose tautomer Modeller picks from the geometry.
* ``clashes``: no two heavy atoms of one molecule more than three bonds apart (1-5 pairs and beyond,
  along the force field's bond graph) are closer than ``CLASH_SCALE`` = 0.8 times the sum of their
  Bondi van der Waals radii (``BONDI_RADII_NM``: C 1.70, N 1.55, O 1.52, S 1.80 Å; A. Bondi,
  J. Phys. Chem. 68, 441 (1964)). The scale is calibrated on the force field's own equilibrium:
  at 0.9, amber14/GBn2 reference MD of capped dipeptides has 3-15% of its frames "clashing"
  (hydrogen bonds N···O at 2.7 Å, carbonyl O(i)···C(i+1) at 2.8 Å, aromatic CG···N(i+1)); at 0.8
  none (``python benchmarks/validity_of_md.py references/capped_2aa/*`` prints both). A clash
  is then an overlap no thermal conformation has, which is what the check is for. Atoms of different molecules (the K chains of a walk written into
  one topology overlap in space by design) are never a clash. Hydrogens are not checked.
* ``chirality``: every CA with a CB is L: (N − CA)·((C − CA) × (CB − CA)) > 0
  (:func:`openmm_jamun.analysis.ensemble.d_amino_acids`; glycine has no chiral CA).
* ``peptide_bonds``: every peptide bond C(i)-N(i+1) is trans, ω = CA(i)-C(i)-N(i+1)-CA(i+1) within
  ``OMEGA_TOLERANCE_DEG`` = 30° of 180°, except when residue i+1 is proline (cis X-Pro is real
  chemistry). The caps' peptide bonds are checked too: ACE's ω uses its methyl carbon CH3 in
  place of CA(i), NME's its methyl carbon (named C in OpenMM, CH3 elsewhere) in place of CA(i+1).
  Found from the bond graph: a C named "C" bonded to an N named "N" of another residue; the
  α-carbon on each side is the atom named CA, or else the residue's carbon bonded to that C or N.

A frame with a NaN or infinite coordinate fails every check (``finite`` is False).

Beside the checks, :func:`validity_summary` reports the share of frames that *fell apart*: a bond
more than ``FELL_APART_NM`` = 1 Å off its r0, which a walk outside its model's domain gives and
no relaxation repairs.

:class:`ValidityChecker` does the set-up once per topology (force field System, bond graph, pair
lists); :func:`frame_validity` and :func:`validity_summary` are the everyday entry points.
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import app, unit
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, shortest_path

from ..data.build import add_hydrogens, forcefield
from ..topology import is_heavy_atom
from .ensemble import _chiral_centres

#: |r − r0| allowed for every covalent bond (nm): 0.1 Å.
BOND_TOLERANCE_NM = 0.01
#: Bondi van der Waals radii (nm) of the heavy elements in peptides; H (1.20 Å) is listed for
#: completeness but hydrogens are not part of the clash check.
BONDI_RADII_NM = {"C": 0.170, "N": 0.155, "O": 0.152, "S": 0.180, "H": 0.120}
#: a clash: two heavy atoms closer than this times the sum of their radii
CLASH_SCALE = 0.8
#: a frame "fell apart" when a bond is further than this from its r0 (nm): 1 Å
FELL_APART_NM = 0.1
#: pairs at least this many bonds apart are checked for clashes ("more than three bonds apart")
CLASH_MIN_BONDS_APART = 4
#: ω allowed within this many degrees of 180° (trans)
OMEGA_TOLERANCE_DEG = 30.0
#: the per-frame checks, in the order reasons name them
CHECKS = ("bonds", "clashes", "chirality", "peptide_bonds")

_FRAME_BLOCK = 4096  # frames per block in the pair-distance computations (bounds memory)


def as_openmm_topology(topology) -> app.Topology:
    if hasattr(topology, "to_openmm"):  # an mdtraj Topology
        return topology.to_openmm()
    if not isinstance(topology, app.Topology):
        raise TypeError(f"topology must be an OpenMM or mdtraj Topology; got {type(topology).__name__}")
    return topology


def frames_nm(frames) -> np.ndarray:
    """[F, N, 3] float64 nm from an mdtraj Trajectory, an array (nm) or an openmm.unit quantity."""
    if hasattr(frames, "xyz") and hasattr(frames, "topology"):
        frames = frames.xyz
    if unit.is_quantity(frames):
        if not frames.unit.is_compatible(unit.nanometer):
            raise TypeError(f"frames must be lengths; got unit {frames.unit}")
        frames = frames.value_in_unit(unit.nanometer)
    xyz = np.array(frames, dtype=np.float64)  # a copy: callers may change it
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"frames must have shape [frames, atoms, 3] (nm); got {xyz.shape}")
    return xyz


def _atom_key(atom) -> tuple:
    return (atom.residue.chain.index, atom.residue.index, atom.name)


def equilibrium_bonds(topology, positions=None) -> tuple[np.ndarray, np.ndarray]:
    """The covalent bonds of ``topology`` as sorted atom pairs [B, 2] (i < j, indices into
    ``topology``) and their amber14 equilibrium lengths r0 [B] (nm).

    An all-atom topology is given to amber14 directly; a topology without hydrogens gets an
    all-atom template from ``add_hydrogens(topology, positions)`` (``positions``: any frame of the
    molecule, nm or a quantity) and keeps the template's bonds between the atoms it has.
    Raises ValueError when amber14 has no template for a residue."""
    topology = as_openmm_topology(topology)
    atoms = list(topology.atoms())
    if any(not is_heavy_atom(atom) for atom in atoms):
        template = topology
    else:
        if positions is None:
            raise ValueError("a topology without hydrogens needs positions (any frame of the molecule) to build "
                             "its all-atom template for the force field's bond lengths")
        xyz = frames_nm(positions)[0]
        if xyz.shape != (len(atoms), 3) or not np.isfinite(xyz).all():
            raise ValueError(f"template positions must be {len(atoms)} finite atoms; got shape {xyz.shape}")
        template = add_hydrogens(topology, xyz * unit.nanometer).topology
    try:
        system = forcefield().createSystem(template, nonbondedMethod=app.NoCutoff, constraints=None)
    except ValueError as error:
        raise ValueError(f"amber14 cannot template this molecule ({error}); validity needs the force field's "
                         "bond lengths") from None
    index_of = {_atom_key(atom): atom.index for atom in atoms}
    template_atoms = list(template.atoms())
    lengths = {}
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                a, b, r0, _ = force.getBondParameters(k)
                i, j = index_of.get(_atom_key(template_atoms[a])), index_of.get(_atom_key(template_atoms[b]))
                if i is not None and j is not None:
                    lengths[(min(i, j), max(i, j))] = r0.value_in_unit(unit.nanometer)
    pairs = sorted(lengths)
    return (np.array(pairs, dtype=np.int64).reshape(-1, 2),
            np.array([lengths[p] for p in pairs], dtype=np.float64))


def _dihedrals(xyz: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Dihedral angles (radians, (−π, π]) of atom quadruples [Q, 4] in frames [F, N, 3]: [F, Q]."""
    p0, p1, p2, p3 = (xyz[:, quads[:, k]] for k in range(4))
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, -1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, -1, keepdims=True) * b1n
    x = np.sum(v * w, -1)
    y = np.sum(np.cross(b1n, v) * w, -1)
    return np.arctan2(y, x)


class ValidityChecker:
    """The validity checks of the module docstring for one topology, set up once.

    ``topology``: OpenMM or mdtraj Topology, all-atom or heavy-atom only (then ``positions``, one
    frame of it, is needed to build the all-atom template for r0). ``checker(frames)`` returns
    :func:`frame_validity`'s dict."""

    def __init__(self, topology, positions=None):


        self.topology = as_openmm_topology(topology)
        atoms = list(self.topology.atoms())
        self.n_atoms = len(atoms)
        self.bonds, self.r0 = equilibrium_bonds(self.topology, positions)
        if len(self.bonds) == 0:
            raise ValueError("the topology has no covalent bonds the force field knows: nothing to check")

        # clash pairs: heavy atoms of one molecule at least CLASH_MIN_BONDS_APART bonds apart
        heavy = np.array([is_heavy_atom(atom) for atom in atoms])
        elements = [atom.element.symbol if atom.element is not None else None for atom in atoms]
        unknown = sorted({elements[i] for i in np.nonzero(heavy)[0] if elements[i] not in BONDI_RADII_NM},
                         key=str)
        if unknown:
            raise ValueError(f"no van der Waals radius for element(s) {unknown}: BONDI_RADII_NM has "
                             f"{sorted(BONDI_RADII_NM)}")
        graph = coo_matrix((np.ones(len(self.bonds)), (self.bonds[:, 0], self.bonds[:, 1])),
                           shape=(self.n_atoms, self.n_atoms))
        hops = shortest_path(graph, directed=False, unweighted=True)
        _, molecule = connected_components(graph, directed=False)
        i, j = np.triu_indices(self.n_atoms, k=1)
        keep = heavy[i] & heavy[j] & (molecule[i] == molecule[j]) & (hops[i, j] >= CLASH_MIN_BONDS_APART)
        self.clash_pairs = np.stack([i[keep], j[keep]], axis=1)
        radii = np.array([BONDI_RADII_NM.get(e, np.nan) for e in elements])
        self.contact_nm = radii[self.clash_pairs[:, 0]] + radii[self.clash_pairs[:, 1]]

        self.chiral_quads, self.chiral_labels = _chiral_centres(self.topology)
        self.omega_quads, self.omega_labels = self._peptide_bonds(atoms)

    def _peptide_bonds(self, atoms) -> tuple[np.ndarray, list[str]]:
        """(α(i), C(i), N(i+1), α(i+1)) of every non-proline peptide bond, caps included."""
        neighbours = {k: [] for k in range(self.n_atoms)}
        for a, b in self.bonds:
            neighbours[a].append(b)
            neighbours[b].append(a)

        def alpha(centre: int) -> int | None:
            residue = atoms[centre].residue
            named = [a.index for a in residue.atoms() if a.name == "CA"]
            if named:
                return named[0]
            carbons = [k for k in neighbours[centre] if atoms[k].residue is residue
                       and atoms[k].element is not None and atoms[k].element.symbol == "C"]
            return min(carbons) if carbons else None

        quads, labels = [], []
        for a, b in self.bonds:
            for c, n in ((a, b), (b, a)):
                if (atoms[c].name == "C" and atoms[n].name == "N" and atoms[c].residue is not atoms[n].residue
                        and atoms[n].residue.name != "PRO"):
                    ends = alpha(c), alpha(n)
                    if None not in ends:
                        quads.append([ends[0], c, n, ends[1]])
                        labels.append(f"{atoms[c].residue.name}{atoms[c].residue.index + 1}-"
                                      f"{atoms[n].residue.name}{atoms[n].residue.index + 1}")
        return np.array(quads, dtype=np.int64).reshape(-1, 4), labels

    def __call__(self, frames) -> dict:
        xyz = frames_nm(frames)
        if xyz.shape[1] != self.n_atoms:
            raise ValueError(f"frames have {xyz.shape[1]} atoms; the topology has {self.n_atoms}")
        finite = np.isfinite(xyz).all(axis=(1, 2))
        xyz = np.where(finite[:, None, None], xyz, 0.0)  # checks run on zeros, then fail on ``finite``
        n = len(xyz)
        deviation = np.zeros(n)
        contact_ratio = np.full(n, np.inf)
        for start in range(0, n, _FRAME_BLOCK):
            block = xyz[start:start + _FRAME_BLOCK]
            lengths = np.linalg.norm(block[:, self.bonds[:, 0]] - block[:, self.bonds[:, 1]], axis=-1)
            deviation[start:start + _FRAME_BLOCK] = np.abs(lengths - self.r0).max(axis=1)
            if len(self.clash_pairs):
                distances = np.linalg.norm(block[:, self.clash_pairs[:, 0]] - block[:, self.clash_pairs[:, 1]], axis=-1)
                contact_ratio[start:start + _FRAME_BLOCK] = (distances / self.contact_nm).min(axis=1)
        if len(self.chiral_quads):
            n_, ca, c, cb = (xyz[:, self.chiral_quads[:, k]] for k in range(4))
            d_centres = (np.einsum("tri,tri->tr", n_ - ca, np.cross(c - ca, cb - ca)) < 0).sum(axis=1)
        else:
            d_centres = np.zeros(n, dtype=np.int64)
        if len(self.omega_quads):
            with np.errstate(invalid="ignore", divide="ignore"):  # zeroed non-finite frames: no angle, and failed anyway
                omega = _dihedrals(xyz, self.omega_quads)
            cis = (np.abs(omega) < np.deg2rad(180.0 - OMEGA_TOLERANCE_DEG)).sum(axis=1)
        else:
            cis = np.zeros(n, dtype=np.int64)
        result = {
            "finite": finite,
            "bonds": finite & (deviation <= BOND_TOLERANCE_NM),
            "clashes": finite & (contact_ratio >= CLASH_SCALE),
            "chirality": finite & (d_centres == 0),
            "peptide_bonds": finite & (cis == 0),
            "max_bond_deviation_nm": np.where(finite, deviation, np.nan),
            "min_contact_ratio": np.where(finite, contact_ratio, np.nan),
            "d_centres": np.where(finite, d_centres, -1),
            "non_trans_peptide_bonds": np.where(finite, cis, -1),
        }
        result["valid"] = result["bonds"] & result["clashes"] & result["chirality"] & result["peptide_bonds"]
        return result


def frame_validity(frames, topology=None, checker: ValidityChecker | None = None) -> dict:
    """Per-frame validity of ``frames`` (an mdtraj Trajectory, or [F, N, 3] nm / a quantity with
    ``topology``): boolean arrays [F] ``valid``, ``bonds``, ``clashes``, ``chirality``,
    ``peptide_bonds`` (True = passes) and ``finite``, plus diagnostics: ``max_bond_deviation_nm``,
    ``min_contact_ratio`` (closest heavy-atom pair over the sum of their radii), ``d_centres`` and
    ``non_trans_peptide_bonds`` (counts; −1 and NaN for non-finite frames).

    Pass a ``checker`` to reuse its set-up across calls; without one, a heavy-atom topology's
    all-atom template is built on the first finite frame."""
    xyz = frames_nm(frames)
    if checker is None:
        if topology is None:
            if not hasattr(frames, "topology"):
                raise ValueError("give the topology of plain coordinate frames")
            topology = frames.topology
        topology = as_openmm_topology(topology)
        if xyz.shape[1] != topology.getNumAtoms():
            raise ValueError(f"frames have {xyz.shape[1]} atoms; the topology has {topology.getNumAtoms()}")
        finite = np.nonzero(np.isfinite(xyz).all(axis=(1, 2)))[0]
        has_hydrogens = any(not is_heavy_atom(atom) for atom in topology.atoms())
        if not has_hydrogens and len(finite) == 0:  # no template possible, and nothing to check
            n = len(xyz)
            false = np.zeros(n, dtype=bool)
            return {"finite": false, "bonds": false, "clashes": false, "chirality": false, "peptide_bonds": false,
                    "valid": false, "max_bond_deviation_nm": np.full(n, np.nan),
                    "min_contact_ratio": np.full(n, np.nan), "d_centres": np.full(n, -1),
                    "non_trans_peptide_bonds": np.full(n, -1)}
        checker = ValidityChecker(topology, None if has_hydrogens else xyz[finite[0]])
    return checker(xyz)


def failure_reasons(validity: dict) -> list[str | None]:
    """Per frame: None when valid, else the failed checks joined by ", " ("non-finite coordinates"
    for a frame with NaN or inf)."""
    reasons = []
    for k in range(len(validity["valid"])):
        if validity["valid"][k]:
            reasons.append(None)
        elif not validity["finite"][k]:
            reasons.append("non-finite coordinates")
        else:
            reasons.append(", ".join(check for check in CHECKS if not validity[check][k]))
    return reasons


def validity_summary(validity: dict) -> dict:
    """JSON-friendly fractions of :func:`frame_validity`'s result: frames, valid fraction, the fraction
    failing each check (a frame can fail several), and the definition's thresholds."""
    frames = int(len(validity["valid"]))

    def fraction(mask) -> float | None:
        return float(np.mean(mask)) if frames else None

    with np.errstate(invalid="ignore"):  # NaN deviation (a non-finite frame) counts as fallen apart
        fell_apart = ~(validity["max_bond_deviation_nm"] <= FELL_APART_NM)
    return {
        "frames": frames,
        "valid_fraction": fraction(validity["valid"]),
        "failing_fraction": {check: fraction(~validity[check]) for check in CHECKS},
        "non_finite_fraction": fraction(~validity["finite"]),
        "fell_apart_fraction": fraction(fell_apart),
        "definition": {
            "bond_tolerance_nm": BOND_TOLERANCE_NM, "bond_reference": "amber14 HarmonicBondForce r0",
            "clash_scale": CLASH_SCALE, "clash_min_bonds_apart": CLASH_MIN_BONDS_APART,
            "vdw_radii_nm": "Bondi 1964: " + ", ".join(f"{e} {r}" for e, r in BONDI_RADII_NM.items() if e != "H"),
            "omega_tolerance_deg": OMEGA_TOLERANCE_DEG, "omega_exempt": "X-Pro", "fell_apart_nm": FELL_APART_NM,
            "chirality": "L at every CA with a CB",
        },
    }
