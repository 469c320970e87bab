"""Walk-jump sampling of capped alanine dipeptide with the shipped model, through the Python API.

    python examples/walk_jump_api.py            # writes example-out/clean.dcd and example-out/walk.dcd
"""

import os
import warnings

import openmm
from openmm import app, unit

from openmm_jamun import JamunForce, JamunIntegrator, JumpReporter, create_noised_system
from openmm_jamun.data.build import build_peptide
from openmm_jamun.model.export import export_denoiser, load_checkpoint
from openmm_jamun.sample import resolve_model

os.makedirs("example-out", exist_ok=True)
topology, positions = build_peptide("A")  # ACE-ALA-NME, amber14-minimised
denoiser, _ = load_checkpoint(resolve_model("default"))  # topology-agnostic weights
chains = 4
module = export_denoiser(denoiser, topology, chains=chains)  # TorchScript for this topology, 4 chains
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "dropping 12 hydrogen atoms": the walk is on heavy atoms
    walk = create_noised_system(topology, positions, module, seed=1)
walk.system.addForce(JamunForce(module))
simulation = app.Simulation(walk.topology, walk.system, JamunIntegrator(temperature=300 * unit.kelvin),
                            openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
simulation.context.setPositions(walk.positions)
simulation.context.setVelocities(walk.velocities)
simulation.reporters += [
    JumpReporter("example-out/clean.dcd", 10),
    app.DCDReporter("example-out/walk.dcd", 10),
    app.StateDataReporter("example-out/log.csv", 100, step=True, speed=True),
]
simulation.step(2000)
print(f"{simulation.reporters[0].frames_written} clean frames x {chains} chains in example-out/clean.dcd")
