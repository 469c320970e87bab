"""Does a model's score pull a stretched bond back? The restoring force off the data manifold.

A walk stays chemically whole only if the score pulls atoms back wherever the walk can wander,
also past the σ-noised frames the model was trained on. For reference frames y = x + σε of a
peptide, this moves one atom of a bond outwards along the bond by d (0 to 0.5 nm) and prints the
jump's displacement of that atom along the bond, σ²·score·u = (x̂(y) − y)·u (nm): negative pulls
the atom back; near zero far out means the model has no opinion there, and an energy model then
puts probability on broken molecules (exp(−E) flat). Averaged over --frames reference frames.

    python benchmarks/restoring_force.py references/capped_2aa/AA --models capped_2aa runs/capped_2aa_energy_ft/best.pt
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openmm_jamun.analysis.report import load_heavy  # noqa: E402
from openmm_jamun.model.registry import denoiser_for, resolve_model  # noqa: E402

STRETCHES_NM = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="reference MD of the peptide (a `jamun md` dir)")
    parser.add_argument("--models", nargs="+", default=["capped_2aa"], help="model names or paths")
    parser.add_argument("--bonds", default="1:CA-CB,1:N-CA",
                        help="RESIDUE:ATOM-ATOM, comma-separated; the second atom is moved")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference = load_heavy(args.reference)
    topology = reference.topology.to_openmm()
    index = {(a.residue.index, a.name): a.index for a in reference.topology.atoms}
    models = {}
    for model in args.models:
        path = model if os.path.exists(model) else resolve_model(model)
        models[model] = denoiser_for(path, topology, 1)
    picks = np.linspace(0, reference.n_frames - 1, args.frames).astype(int)
    for bond in args.bonds.split(","):
        residue, pair = bond.split(":")
        first, second = pair.split("-")
        i, j = index[(int(residue), first)], index[(int(residue), second)]
        print(f"{bond}: (x̂(y) − y)·u of the moved {second} (nm; negative pulls back), mean of {len(picks)} frames")
        print(f"  {'stretch (nm)':28s}" + "".join(f"{d:8.2f}" for d in STRETCHES_NM))
        for name, module in models.items():
            rng = np.random.default_rng(args.seed)
            sigma = float(module.sigma)  # each model's own noise level
            rows = []
            for frame in picks:
                y0 = reference.xyz[frame].astype(np.float64) + sigma * rng.normal(size=reference.xyz[frame].shape)
                u = (y0[j] - y0[i]) / np.linalg.norm(y0[j] - y0[i])
                row = []
                for stretch in STRETCHES_NM:
                    y = y0.copy()
                    y[j] += stretch * u
                    xhat = module(torch.tensor(y, dtype=torch.float32)).detach().numpy()
                    row.append(float((xhat[j] - y[j]) @ u))
                rows.append(row)
            print(f"  {name[-28:]:28s}" + "".join(f"{v:8.3f}" for v in np.mean(rows, axis=0)))


if __name__ == "__main__":
    main()
