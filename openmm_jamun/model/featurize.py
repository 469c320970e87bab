"""Per-atom features and bonds of a peptide topology (OpenMM or mdtraj).

Features per atom: element, PDB atom name and residue name, each an index
into a fixed vocabulary whose last entry is "other". The residue's position
in the sequence is deliberately not a feature: it hurts transfer to longer
peptides. Heavy atoms only by default.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..topology import is_heavy_atom

ELEMENTS = ("C", "N", "O", "S", "H", "other")
ATOM_NAMES = (
    "N", "CA", "C", "O", "OXT", "CB", "CG", "CG1", "CG2", "CD", "CD1", "CD2", "CE", "CE1", "CE2", "CE3",
    "CZ", "CZ2", "CZ3", "CH2", "CH3", "OG", "OG1", "OH", "OD1", "OD2", "OE1", "OE2", "ND1", "ND2", "NE",
    "NE1", "NE2", "NH1", "NH2", "NZ", "SD", "SG", "other",
)
RESIDUES = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
    "PRO", "SER", "THR", "TRP", "TYR", "VAL", "ACE", "NME", "other",
)
# Protonation / disulfide variants of force fields map to the standard residue.
RESIDUE_ALIASES = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "CYX": "CYS",
    "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS", "NMA": "NME",
}



@dataclass(frozen=True)
class TopologyFeatures:
    """Features of the atoms kept from a topology (one chain of the model)."""

    atom_indices: np.ndarray  # indices into the input topology
    element: np.ndarray  # int64 [n]
    atom_name: np.ndarray  # int64 [n]
    residue: np.ndarray  # int64 [n]
    bonds: np.ndarray  # int64 [2, B], each bond once, i < j, local indices
    atom_names: tuple[str, ...]
    atom_elements: tuple[str, ...]
    residue_names: tuple[str, ...]

    @property
    def num_atoms(self) -> int:
        return len(self.atom_indices)


def _element_symbol(atom) -> str:
    element = atom.element
    if element is None:
        return ""
    return element.symbol


def _bonds(topology):
    for bond in topology.bonds():
        a, b = bond[0], bond[1]
        yield a.index, b.index


def featurize(topology, heavy_atoms_only: bool = True) -> TopologyFeatures:
    """Features of ``topology`` (``openmm.app.Topology`` or ``mdtraj.Topology``).

    Unknown residues map to "other" with a warning; a topology with no
    (heavy) atoms is an error.
    """
    if hasattr(topology, "to_openmm"):  # an mdtraj Topology
        topology = topology.to_openmm()
    atoms = list(topology.atoms())
    if not atoms:
        raise ValueError("the topology is empty: no atoms to featurize")
    kept = [atom for atom in atoms if is_heavy_atom(atom) or not heavy_atoms_only]
    if not kept:
        raise ValueError("the topology has no heavy atoms: JAMUN models work on heavy atoms")

    local = {atom.index: i for i, atom in enumerate(kept)}
    element, atom_name, residue = [], [], []
    unknown_residues = set()
    for atom in kept:
        symbol = _element_symbol(atom)
        element.append(ELEMENTS.index(symbol) if symbol in ELEMENTS else len(ELEMENTS) - 1)
        name = atom.name.strip()
        atom_name.append(ATOM_NAMES.index(name) if name in ATOM_NAMES else len(ATOM_NAMES) - 1)
        res = RESIDUE_ALIASES.get(atom.residue.name, atom.residue.name)
        if res not in RESIDUES[:-1]:
            unknown_residues.add(atom.residue.name)
            res = "other"
        residue.append(RESIDUES.index(res))
    if unknown_residues:
        warnings.warn(
            f"non-standard residue(s) {', '.join(sorted(unknown_residues))} featurized as 'other': "
            "the model has not seen them and may sample them poorly",
            stacklevel=2,
        )
    bonds = sorted({(min(local[a], local[b]), max(local[a], local[b]))
                    for a, b in _bonds(topology) if a in local and b in local})
    bond_array = np.array(bonds, dtype=np.int64).T.reshape(2, -1)
    return TopologyFeatures(
        atom_indices=np.array([atom.index for atom in kept], dtype=np.int64),
        element=np.array(element, dtype=np.int64),
        atom_name=np.array(atom_name, dtype=np.int64),
        residue=np.array(residue, dtype=np.int64),
        bonds=bond_array,
        atom_names=tuple(atom.name for atom in kept),
        atom_elements=tuple(_element_symbol(atom) for atom in kept),
        residue_names=tuple(atom.residue.name for atom in kept),
    )
