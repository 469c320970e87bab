"""The walk's System: particles of mass M·kT on the heavy atoms, no other forces."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import app, unit

from ._units import denoiser_sigma_nm, jamun_mass, kT_kj_per_mol, length_nm, temperature_kelvin
from .model.contract import DenoiserInfo, load_denoiser
from .inputs import read_structure_file
from .topology import heavy_atom_indices, subset_topology


@dataclass
class NoisedSystem:
    """Everything needed to start a walk.

    ``positions`` is y⁽⁰⁾ = x⁽⁰⁾ + σε, ``velocities`` ~ N(0, kT/m), both for
    every particle of ``system``; ``clean_positions`` is x⁽⁰⁾ for the same
    particles; ``atom_indices`` maps the particles of one chain to atoms of the
    input topology.
    """

    system: openmm.System
    topology: app.Topology
    positions: unit.Quantity
    velocities: unit.Quantity
    clean_positions: unit.Quantity
    atom_indices: np.ndarray
    num_chains: int
    sigma: unit.Quantity
    particle_mass: unit.Quantity


def _read_structure(structure, positions):
    if isinstance(structure, (str, os.PathLike)):
        return read_structure_file(os.fspath(structure))
    if isinstance(structure, (app.PDBFile, app.PDBxFile, app.Modeller)):
        return structure.topology, structure.getPositions(asNumpy=True) if positions is None else positions
    if isinstance(structure, app.Topology):
        if positions is None:
            raise ValueError("positions are required when a Topology is given")
        return structure, positions
    raise TypeError(f"structure must be a PDB/PDBx path, PDBFile, Modeller or Topology; got {type(structure).__name__}")


def _positions_nm(positions, n_atoms: int) -> np.ndarray:
    if unit.is_quantity(positions):
        if not positions.unit.is_compatible(unit.nanometer):
            raise TypeError(f"positions must be lengths; got unit {positions.unit}")
        positions = positions.value_in_unit(unit.nanometer)
    array = np.asarray(positions, dtype=np.float64)
    if array.shape != (n_atoms, 3):
        raise ValueError(f"positions must have shape ({n_atoms}, 3); got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("positions contain NaN or inf")
    return array


def _check_bond_lengths(topology: app.Topology, x_nm: np.ndarray) -> None:
    """Covalent bonds are 0.1-0.2 nm long: a median far outside that means positions in the wrong
    unit (Å given as plain numbers, which OpenMM reads as nm), not a molecule."""
    pairs = np.array([(a.index, b.index) for a, b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return
    median = float(np.median(np.linalg.norm(x_nm[pairs[:, 0]] - x_nm[pairs[:, 1]], axis=1)))
    if not 0.05 < median < 0.3:
        hint = " (they look like Å: plain numbers are read as nm)" if 0.5 < median < 3 else ""
        raise ValueError(f"bonded atoms are {median:.3g} nm apart (median over {len(pairs)} bonds), not 0.1-0.2 nm: "
                         f"positions in the wrong unit{hint}; pass an openmm.unit quantity")


def create_noised_system(structure, positions=None, denoiser=None, *, sigma=None, temperature=300 * unit.kelvin,
                         mass: float = 1.0, chains: int | None = None, heavy_atoms_only: bool = True,
                         seed: int | None = None) -> NoisedSystem:
    """Build the walk System and its starting point.

    Parameters
    ----------
    structure : PDB/PDBx path, PDBFile, Modeller or Topology
        The molecule; with a Topology, pass ``positions`` too.
    denoiser : path or ScriptModule, optional
        Gives σ and the atom count (and chain count) to check against.
    sigma : length, optional
        Needed when no denoiser is given; must match the denoiser otherwise.
    temperature, mass :
        Particle mass is M·kT (amu), JAMUN's M = ``mass``.
    chains : int, optional
        Independent copies of the molecule in one System. Defaults to the
        denoiser's ``num_chains``.
    heavy_atoms_only : bool
        Drop hydrogens (with a warning saying how many), as JAMUN models do.
    seed : int, optional
        Seeds ε and the initial velocities.

    The System has no forces: add a :class:`~openmm_jamun.force.JamunForce`.
    """
    topology, raw_positions = _read_structure(structure, positions)
    x_all = _positions_nm(raw_positions, topology.getNumAtoms())
    _check_bond_lengths(topology, x_all)

    if heavy_atoms_only:
        indices = heavy_atom_indices(topology)
        dropped = topology.getNumAtoms() - len(indices)
        if dropped:
            warnings.warn(
                f"dropping {dropped} hydrogen atom(s): the JAMUN walk runs on the {len(indices)} heavy atoms",
                stacklevel=2,
            )
    else:
        indices = np.arange(topology.getNumAtoms())
    if len(indices) == 0:
        raise ValueError("the structure has no heavy atoms: nothing to sample")

    info: DenoiserInfo | None = None
    if denoiser is not None:
        _, info = load_denoiser(denoiser)
    if info is not None:
        sigma_nm = denoiser_sigma_nm(sigma, info.sigma)
    elif sigma is not None:
        sigma_nm = length_nm(sigma, "sigma")
    else:
        raise ValueError("give a denoiser or sigma")

    n = len(indices)
    if chains is None:
        chains = info.num_chains if info is not None else 1
    chains = int(chains)
    if chains < 1:
        raise ValueError(f"chains must be >= 1; got {chains}")
    if info is not None:
        if info.num_atoms != chains * n:
            raise ValueError(
                f"the denoiser is for {info.num_atoms} atoms ({info.num_chains} chain(s) of "
                f"{info.atoms_per_chain}), but this structure has {n} "
                f"{'heavy ' if heavy_atoms_only else ''}atoms x {chains} chain(s) = {chains * n}"
            )
        if info.atom_names is not None:
            atoms = [list(topology.atoms())[i] for i in indices]
            theirs = [f"{res}:{name}" for res, name in zip(info.residue_names, info.atom_names)]
            ours = [f"{atom.residue.name}:{atom.name}" for atom in atoms]
            if theirs != ours:
                first = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
                raise ValueError(
                    "the denoiser was exported for another topology: heavy atom "
                    f"{first} is {theirs[first]} in the model but {ours[first]} here"
                )

    temperature_k = temperature_kelvin(temperature)
    kT = kT_kj_per_mol(temperature_k)
    particle_mass = jamun_mass(mass) * kT

    system = openmm.System()
    for _ in range(chains * n):
        system.addParticle(particle_mass)

    rng = np.random.default_rng(seed)
    x0 = np.tile(x_all[indices], (chains, 1))
    y0 = x0 + sigma_nm * rng.standard_normal(x0.shape)
    v0 = np.sqrt(kT / particle_mass) * rng.standard_normal(x0.shape)
    return NoisedSystem(
        system=system,
        topology=subset_topology(topology, indices, chains),
        positions=y0 * unit.nanometer,
        velocities=v0 * unit.nanometer / unit.picosecond,
        clean_positions=x0 * unit.nanometer,
        atom_indices=indices,
        num_chains=chains,
        sigma=sigma_nm * unit.nanometer,
        particle_mass=particle_mass * unit.amu,
    )
