"""Walk-jump sampling of the capped dipeptide AA (ACE-ALA-ALA-NME) with the shipped model, through
the Python API: one call builds the walk, OpenMM's reporters sit beside the JumpReporter.

    python examples/walk_jump_api.py [--steps 2000]   # writes example-out/clean.dcd, relaxed.dcd and walk.dcd

The shipped model knows capped dipeptides only: on a capped single residue (ACE-ALA-NME) its walk
falls apart.
"""

import argparse
import os

import mdtraj
from openmm import app, unit

from openmm_jamun import JumpReporter, create_walk_simulation
from openmm_jamun.analysis.validity import ValidityChecker, frame_validity, validity_summary
from openmm_jamun.analysis.torsions import split_chains

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=2000)
args = parser.parse_args()

os.makedirs("example-out", exist_ok=True)
chains = 4
simulation = create_walk_simulation("AA", model="default", chains=chains, seed=1)  # the same walk every run
jumps = JumpReporter("example-out/clean.dcd", 10)
relaxed = JumpReporter("example-out/relaxed.dcd", 10, relax=True)  # all atoms, + example-out/relaxed_topology.pdb
simulation.reporters += [
    jumps,
    relaxed,
    app.DCDReporter("example-out/walk.dcd", 10),
    app.StateDataReporter("example-out/log.csv", 100, step=True, speed=True),
]
simulation.step(args.steps)
jumps.close()
relaxed.close()

# The clean frames, every chain pooled, checked by the package's validity definition (amber14 bond
# lengths, clashes, chirality, trans peptide bonds); the built peptide is the all-atom template.
top = mdtraj.Topology.from_openmm(simulation.topology)
clean = split_chains(mdtraj.load("example-out/clean.dcd", top=top))
start = simulation.noised.clean_positions.value_in_unit(unit.nanometer)[: clean.n_atoms]
validity = validity_summary(frame_validity(clean, checker=ValidityChecker(clean.topology, start)))
print(f"{jumps.frames_written} clean frames x {chains} chains in example-out/clean.dcd; valid (raw jumps) "
      f"{validity['valid_fraction']:.0%}, a bond off by more than 1 Å in {validity['fell_apart_fraction']:.0%}")
counts = relaxed.relaxation
print(f"relaxed all-atom frames in example-out/relaxed.dcd: {counts['valid']} of {counts['frames']} valid")
