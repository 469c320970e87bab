"""Which atoms a JAMUN model sees, and topologies cut down to them."""

from __future__ import annotations

import numpy as np
from openmm import app

#: Element symbols of hydrogen (and deuterium): the atoms JAMUN models leave out.
HYDROGEN_SYMBOLS = ("H", "D")


def is_heavy_atom(atom) -> bool:
    """True for an OpenMM or mdtraj atom that is not hydrogen (an atom without an element counts as heavy)."""
    element = atom.element
    return element is None or element.symbol not in HYDROGEN_SYMBOLS


def heavy_atom_indices(topology) -> np.ndarray:
    """Indices of the heavy atoms of an OpenMM or mdtraj topology."""
    atoms = topology.atoms() if callable(topology.atoms) else topology.atoms
    return np.array([atom.index for atom in atoms if is_heavy_atom(atom)], dtype=np.int64)


def heavy_atom_slice(traj):
    """The heavy atoms of an mdtraj Trajectory."""
    return traj.atom_slice(heavy_atom_indices(traj.topology))


def subset_topology(topology: app.Topology, indices, num_copies: int = 1) -> app.Topology:
    """A Topology holding ``num_copies`` chains, each the atoms ``indices`` of ``topology`` with their bonds."""
    indices = [int(i) for i in indices]
    keep = set(indices)
    atoms = list(topology.atoms())
    new = app.Topology()
    for copy in range(num_copies):
        chain_id = chr(ord("A") + copy) if copy < 26 else str(copy)
        mapping = {}
        residues = {}
        chain = new.addChain(chain_id)
        for i in indices:
            atom = atoms[i]
            key = atom.residue.index
            if key not in residues:
                residues[key] = new.addResidue(atom.residue.name, chain, id=atom.residue.id)
            mapping[i] = new.addAtom(atom.name, atom.element, residues[key])
        for bond in topology.bonds():
            a, b = bond[0].index, bond[1].index
            if a in keep and b in keep:
                new.addBond(mapping[a], mapping[b])
    return new
