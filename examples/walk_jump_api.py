"""Walk-jump sampling of the capped dipeptide AA (ACE-ALA-ALA-NME) with the shipped model, through
the Python API. The shipped model knows capped dipeptides only: on a capped single residue
(ACE-ALA-NME, "alanine dipeptide" in MD parlance) its walk falls apart.

    python examples/walk_jump_api.py [--steps 2000]   # writes example-out/clean.dcd and example-out/walk.dcd
"""

import argparse
import os
import warnings

import mdtraj
import openmm
from openmm import app, unit

from openmm_jamun import JamunForce, JamunIntegrator, JumpReporter, create_noised_system
from openmm_jamun.analysis.ensemble import bond_lengths, chemical_validity
from openmm_jamun.analysis.torsions import split_chains
from openmm_jamun.data.build import build_peptide
from openmm_jamun.model.export import export_denoiser, load_checkpoint
from openmm_jamun.sample import resolve_model

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=2000)
args = parser.parse_args()

os.makedirs("example-out", exist_ok=True)
topology, positions = build_peptide("AA")  # ACE-ALA-ALA-NME, amber14-minimised
denoiser, _ = load_checkpoint(resolve_model("default"))  # topology-agnostic weights
chains = 4
module = export_denoiser(denoiser, topology, chains=chains)  # TorchScript for this topology, 4 chains
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "dropping 17 hydrogen atoms": the walk is on heavy atoms
    walk = create_noised_system(topology, positions, module, seed=1)
walk.system.addForce(JamunForce(module))
integrator = JamunIntegrator(temperature=300 * unit.kelvin)
integrator.setRandomNumberSeed(1)  # with create_noised_system's seed: the same walk every run
simulation = app.Simulation(walk.topology, walk.system, integrator,
                            openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
simulation.context.setPositions(walk.positions)
simulation.context.setVelocities(walk.velocities)
jumps = JumpReporter("example-out/clean.dcd", 10)
simulation.reporters += [
    jumps,
    app.DCDReporter("example-out/walk.dcd", 10),
    app.StateDataReporter("example-out/log.csv", 100, step=True, speed=True),
]
simulation.step(args.steps)
jumps.close()

# The clean frames, one chain at a time, against the bond lengths of the built peptide.
top = mdtraj.Topology.from_openmm(walk.topology)
clean = split_chains(mdtraj.load("example-out/clean.dcd", top=top))
start = mdtraj.Trajectory(walk.clean_positions.value_in_unit(unit.nanometer)[: clean.n_atoms], clean.topology)
validity = chemical_validity(clean, bond_lengths(start))
print(f"{jumps.frames_written} clean frames x {chains} chains in example-out/clean.dcd; every bond within 0.2 Å "
      f"in {1 - validity['broken_bond_fraction']:.0%} of them, a bond off by more than 1 Å in "
      f"{validity['fell_apart_fraction']:.0%}")
