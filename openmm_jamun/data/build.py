"""Peptides from a one-letter sequence: PeptideBuilder geometry, OpenMM hydrogens, amber14 minimisation.

Capped peptides (ACE-...-NME, the default) are built as Gly-...-Gly and the
two glycines cut down to the cap atoms (ACE: CA→CH3, C, O; NME: N, CA→C);
OpenMM's PDB name table renames them. Uncapped peptides are zwitterions at
pH 7 (terminal OXT added).

A build is deterministic: the same sequence gives bit-identical positions every time
(``Modeller.addHydrogens`` places new hydrogens with Python's ``random``, which is seeded
for the build and restored afterwards, and all OpenMM work runs on the Reference platform),
so a seeded ``jamun sample`` of a sequence is reproducible, and ``jamun md`` too on one CPU
thread (with several, OpenMM's CPU platform sums forces in an order that depends on the threads).
"""

from __future__ import annotations

import functools
import io
import random
from contextlib import contextmanager

import numpy as np
import openmm
from openmm import app, unit

ONE_TO_THREE = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
    "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
    "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}
MAX_LENGTH = 10

#: The force field of the reference MD and of the minimisation here.
FORCE_FIELD_FILES = ("amber14-all.xml", "implicit/gbn2.xml")


def check_sequence(sequence: str) -> str:
    """Upper-case ``sequence`` and check it: 1-10 standard one-letter residues."""
    if not isinstance(sequence, str):
        raise TypeError(f"sequence must be a string of one-letter codes; got {type(sequence).__name__}")
    seq = sequence.strip().upper()
    unknown = sorted({letter for letter in seq if letter not in ONE_TO_THREE})
    if unknown:
        raise ValueError(
            f"unknown residue letter(s) {', '.join(map(repr, unknown))} in {sequence!r}: "
            f"use the 20 standard one-letter codes {''.join(sorted(ONE_TO_THREE))}"
        )
    if not 1 <= len(seq) <= MAX_LENGTH:
        raise ValueError(f"sequence length must be 1-{MAX_LENGTH}; got {len(seq)} ({sequence!r})")
    return seq


def peptide_name(sequence: str, caps: bool = True) -> str:
    """Directory-friendly name: 'ACE-AD-NME' style is long, so capped 'AD' stays 'AD', uncapped 'uAD'."""
    seq = check_sequence(sequence)
    return seq if caps else f"u{seq}"


#: Seed of Python's ``random`` while hydrogens are added (any fixed value; the caller's state is restored).
_HYDROGEN_SEED = 0


@contextmanager
def _seeded_python_random(seed: int):
    """Python's global ``random`` seeded with ``seed`` inside, the caller's random state restored after."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def forcefield() -> app.ForceField:
    return app.ForceField(*FORCE_FIELD_FILES)


def _heavy_atom_pdb(sequence: str, caps: bool) -> str:
    from Bio.PDB import PDBIO
    import PeptideBuilder
    from PeptideBuilder import Geometry

    letters = ("G" + sequence + "G") if caps else sequence
    geos = [Geometry.geometry(letter) for letter in letters]
    for geo in geos:  # a relaxed, non-clashing start: polyproline-II-like backbone
        geo.phi, geo.psi_im1 = -75.0, 145.0
    structure = PeptideBuilder.make_structure_from_geos(geos)
    chain = structure[0]["A"]
    residues = list(chain)
    if caps:
        first, last = residues[0], residues[-1]
        for name in [atom.get_id() for atom in first if atom.get_id() not in ("CA", "C", "O")]:
            first.detach_child(name)
        first.resname = "ACE"
        for name in [atom.get_id() for atom in last if atom.get_id() not in ("N", "CA")]:
            last.detach_child(name)
        last.resname = "NME"
    else:
        PeptideBuilder.add_terminal_OXT(structure)
    out = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(out)
    return out.getvalue()


def add_hydrogens(topology, positions, ph: float = 7.0) -> app.Modeller:
    """``Modeller.addHydrogens`` with amber14, deterministically: Python's ``random`` (which places the
    new hydrogens) seeded for the call and restored after, on the Reference platform (single-threaded
    and the same on every machine; addHydrogens' default is the fastest platform)."""
    modeller = app.Modeller(topology, positions)
    with _seeded_python_random(_HYDROGEN_SEED):
        modeller.addHydrogens(forcefield(), pH=ph, platform=openmm.Platform.getPlatformByName("Reference"))
    return modeller


def build_peptide(sequence: str, caps: bool = True, minimize: bool = True, ph: float = 7.0):
    """Build a peptide: returns (openmm Topology, positions Quantity in nm), hydrogens included.

    ``build_peptide("AD")`` gives ACE-ALA-ASP-NME, minimised with amber14 + GBn2.
    Deterministic: the same arguments give bit-identical positions (see the module docstring);
    the caller's Python ``random`` state is left as it was. A build is kept for the life of the
    process (placing hydrogens and minimising on the Reference platform takes seconds); each call
    returns its own Topology and positions, which the caller may change.
    """
    topology, xyz = _built_peptide(check_sequence(sequence), bool(caps), bool(minimize), float(ph))
    copy = app.Modeller(app.Topology(), [] * unit.nanometer)
    copy.add(topology, xyz * unit.nanometer)  # Modeller.add copies chains, residues, atoms and bonds
    return copy.topology, xyz.copy() * unit.nanometer


@functools.lru_cache(maxsize=64)
def _built_peptide(seq: str, caps: bool, minimize: bool, ph: float):
    """(Topology, positions [n, 3] nm) of :func:`build_peptide`, built once per arguments."""
    pdb = app.PDBFile(io.StringIO(_heavy_atom_pdb(seq, caps)))
    ff = forcefield()
    modeller = add_hydrogens(pdb.topology, pdb.positions, ph)
    positions = modeller.getPositions()
    reference = openmm.Platform.getPlatformByName("Reference")
    if minimize:
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), reference)
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)
        positions = context.getState(getPositions=True).getPositions(asNumpy=True)
    xyz = np.array(unit.Quantity(positions).value_in_unit(unit.nanometer), dtype=np.float64)
    xyz.setflags(write=False)
    return modeller.topology, xyz


def write_pdb(path, topology, positions) -> None:
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
