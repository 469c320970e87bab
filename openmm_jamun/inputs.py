"""What a user hands the sampler: a one-letter sequence or a structure file of one peptide, checked.

Every check that can fail on input runs here, before anything is written: residues the model
cannot know, a second chain, atom names it would not recognise, D amino acids.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from openmm import app, unit

from .analysis.ensemble import d_amino_acids
from .data.build import build_peptide, check_sequence
from .model.featurize import ATOM_NAMES, RESIDUE_ALIASES, RESIDUES
from .topology import is_heavy_atom

#: Structure files the sampler reads.
STRUCTURE_SUFFIXES = (".pdb", ".cif", ".pdbx")


def read_structure_file(path: str):
    """(topology, positions) of a PDB or PDBx/mmCIF file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"structure file not found: {path}")
    if path.lower().endswith((".cif", ".pdbx")):
        structure = app.PDBxFile(path)
    elif path.lower().endswith(".pdb"):
        structure = app.PDBFile(path)
    else:
        raise ValueError(f"input file {path}: expected a .pdb, .cif or .pdbx structure")
    return structure.topology, structure.getPositions(asNumpy=True)


def read_input(source: str):
    """(topology, positions, name) from a one-letter sequence (capped) or a PDB/PDBx file holding one
    peptide of standard residues with PDB atom names."""
    if os.path.isfile(source):
        topology, positions = read_structure_file(source)
        name = Path(source).stem
    else:
        if source.lower().endswith(STRUCTURE_SUFFIXES):
            raise FileNotFoundError(f"input file not found: {source}")
        topology, positions = build_peptide(check_sequence(source))
        name = source.upper()
    unsupported = sorted({r.name for r in topology.residues()
                          if RESIDUE_ALIASES.get(r.name, r.name) not in RESIDUES[:-1]})
    if unsupported:
        raise ValueError(f"unsupported residue(s) {', '.join(unsupported)} in {source}: the model knows the 20 "
                         "standard amino acids and ACE/NME caps")
    chains = [chain.id for chain in topology.chains() if any(r.name != "HOH" for r in chain.residues())]
    if len(chains) > 1:
        raise ValueError(f"{source} holds {len(chains)} peptide chains ({', '.join(chains)}): JAMUN samples one "
                         "peptide; write each chain to its own file")
    # An unknown name featurizes as 'other', and OpenMM drops its template bonds: the model would
    # see a different molecule. Names follow the PDB/Amber convention (ACE CH3, NME N and C).
    unknown = sorted({f"{atom.name} ({atom.residue.name})" for atom in topology.atoms()
                      if is_heavy_atom(atom) and atom.name not in ATOM_NAMES[:-1]})
    if unknown:
        raise ValueError(f"heavy atom name(s) {', '.join(unknown)} in {source} are unknown to the model, which "
                         "knows PDB atom names (e.g. ACE's CH3): rename them")
    mirrored, labels = d_amino_acids(np.asarray(positions.value_in_unit(unit.nanometer)), topology)
    if mirrored.any():
        names = ", ".join(label for label, d in zip(labels, mirrored[0]) if d)
        raise ValueError(f"{source}: {names} {'is a D amino acid' if mirrored.sum() == 1 else 'are D amino acids'} "
                         "(by the handedness of N, C and CB about CA); the model knows L amino acids only and "
                         "would sample the L form")
    return topology, positions, name
