"""JamunForce beside an ordinary OpenMM force: a flat-bottom restraint on the end-to-end distance.

The restraint (a CustomBondForce between the ACE methyl carbon and the NME methyl carbon) acts on
the noised coordinates y, so it biases the walk; the jumps x̂(y) inherit the bias. Use it to keep
sampling inside a region (e.g. extended conformations) or, with reweighting, for umbrella sampling.

    python examples/restrained_walk.py
"""

import os
import warnings

import mdtraj
import numpy as np
import openmm
from openmm import app

from openmm_jamun import JamunForce, JamunIntegrator, JumpReporter, create_noised_system
from openmm_jamun.data.build import build_peptide
from openmm_jamun.model.export import export_denoiser, load_checkpoint
from openmm_jamun.sample import resolve_model

os.makedirs("example-out", exist_ok=True)
topology, positions = build_peptide("A")
module = export_denoiser(load_checkpoint(resolve_model("default"))[0], topology)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    walk = create_noised_system(topology, positions, module, seed=2)
atoms = list(walk.topology.atoms())
first = next(a.index for a in atoms if a.residue.name == "ACE" and a.name == "CH3")
last = next(a.index for a in atoms if a.residue.name == "NME" and a.name == "C")

restraint = openmm.CustomBondForce("step(r - r0) * 0.5 * k * (r - r0)^2")  # flat bottom below r0
restraint.addGlobalParameter("r0", 0.60)  # nm
restraint.addGlobalParameter("k", 2000.0)  # kJ/mol/nm^2
restraint.addBond(first, last)
walk.system.addForce(JamunForce(module))
walk.system.addForce(restraint)

simulation = app.Simulation(walk.topology, walk.system, JamunIntegrator(),
                            openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
simulation.context.setPositions(walk.positions)
simulation.context.setVelocities(walk.velocities)
simulation.reporters.append(JumpReporter("example-out/restrained.dcd", 10))
simulation.reporters.append(app.StateDataReporter("example-out/restrained.csv", 100, step=True,
                                                  potentialEnergy=True))  # the restraint's energy only
simulation.step(2000)
simulation.reporters[0].close()
clean = mdtraj.load("example-out/restrained.dcd", top=mdtraj.Topology.from_openmm(walk.topology))
distance = np.linalg.norm(clean.xyz[:, first] - clean.xyz[:, last], axis=1)
print(f"end-to-end distance of the clean frames: mean {distance.mean():.3f} nm, max {distance.max():.3f} nm "
      f"(flat bottom up to 0.60 nm)")
