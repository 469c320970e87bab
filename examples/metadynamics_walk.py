"""Well-tempered metadynamics on φ/ψ of AA (ACE-ALA-ALA-NME): four chains, one shared bias.

The bias acts on the noised coordinates y; the clean frames x̂(y) are written by a JumpReporter and
weighted per (frame, chain) with the c(t) estimator (openmm_jamun.metadynamics.reweighting_weights),
recorded at the JumpReporter's interval so that row i of the weights is frame i of the file.
The shipped model is a direct denoiser, so the reweighting is approximate (a warning says so).

    python examples/metadynamics_walk.py [--steps 2000]
"""

import argparse
import os

import mdtraj
import numpy as np

from openmm_jamun import JumpReporter, create_walk_simulation
from openmm_jamun.analysis.torsions import split_chains, torsions
from openmm_jamun.metadynamics import SharedBiasMetadynamics

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--interval", type=int, default=10, help="steps between clean frames")
args = parser.parse_args()

os.makedirs("example-out", exist_ok=True)
simulation = create_walk_simulation("AA", model="default", chains=4, seed=1)
# the package's gentle defaults (bias factor 3, 0.25 kJ/mol, 0.5 rad: openmm_jamun.metadynamics says why)
metad = SharedBiasMetadynamics.for_torsions(simulation.topology, "phi:1,psi:1", deposit_interval=50,
                                            record_interval=args.interval)
metad.add_to(simulation)
jumps = JumpReporter("example-out/metadynamics.dcd", args.interval)
simulation.reporters.append(jumps)
simulation.step(args.steps)
jumps.close()
metad.save("example-out/metadynamics_bias.npz")

weights = metad.weights()  # [frames, chains]
tmp = "example-out/metadynamics_weights.npy.tmp"
with open(tmp, "wb") as handle:
    np.save(handle, weights)
os.replace(tmp, "example-out/metadynamics_weights.npy")

clean = mdtraj.load("example-out/metadynamics.dcd", top=mdtraj.Topology.from_openmm(simulation.topology))
angles = torsions(split_chains(clean))  # chain-major: chain 0's frames, then chain 1's, ...
phi, psi = angles["phi:1"], angles["psi:1"]
w = weights.T.ravel()  # chain-major, as split_chains orders the frames
basins = {"alpha_R": (phi < 0) & (psi > -2.2) & (psi < 0.9),
          "beta/PPII": (phi < 0) & ((psi >= 0.9) | (psi <= -2.2)),
          "alpha_L / phi > 0": phi >= 0}
print(f"{clean.n_frames} frames x {weights.shape[1]} chains, {metad.deposits} depositions, "
      f"max bias {metad.bias_grid.max():.1f} kJ/mol, effective sample size {1 / (w**2).sum():.0f} of {w.size}")
for name, mask in basins.items():
    print(f"  {name:18s} unweighted {mask.mean():6.1%}  reweighted {w[mask].sum():6.1%}")
