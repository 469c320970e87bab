"""Sampling efficiency against plain MD on the same machine: φ/ψ JSD to a long reference as a
function of wall-clock seconds, for JAMUN (K chains) and plain MD (amber14 + GBn2, 2 fs), plus
explicit-TIP3P MD of the same peptide for the same wall time; and decorrelation times in wall
seconds. Prints a table per peptide; not a test.

    python benchmarks/efficiency_vs_md.py AA --reference /path/to/AA-md --wall 300 --chains 16
    python benchmarks/efficiency_vs_md.py AA VD QW --reference-root /path/to/md --wall 300

The reference is a `jamun md` directory (ideally >= 10 ns). JSD 0.1 is the target of the
"time to JSD" column; 'best' is reported when it is not reached. The TIP3P run samples another
solvent model than the GBn2 reference, so its JSD mixes convergence with that difference.
"""

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import openmm
from openmm import app, unit

from openmm_jamun.analysis.ensemble import decorrelation_time
from openmm_jamun.analysis.report import load_heavy
from openmm_jamun.analysis.torsions import backbone_pairs, jsd_2d, torsions
from openmm_jamun.data.build import build_peptide, forcefield
from openmm_jamun.sample import run_sampling


def jsd_curve(traj, reference_pairs, wall_seconds, points=12):
    """(wall seconds, mean φ/ψ JSD of the first frames) at log-spaced prefixes; frames are uniform in time."""
    pairs = backbone_pairs(torsions(traj))
    n = traj.n_frames
    counts = np.unique(np.geomspace(min(n, max(10, n // 200)), n, points).astype(int))
    curve = []
    for c in counts:
        jsd = np.mean([jsd_2d(pairs[r][:c], reference_pairs[r]) for r in reference_pairs])
        curve.append((wall_seconds * c / n, float(jsd)))
    return curve


def time_to(curve, target=0.1):
    for seconds, jsd in curve:
        if jsd <= target:
            return f"{seconds:.0f} s"
    return f"never (best {min(j for _, j in curve):.3f})"


def decorrelation_seconds(traj, wall_seconds):
    pairs = backbone_pairs(torsions(traj))
    frames = max(max(decorrelation_time(np.sin(a[:, i])), decorrelation_time(np.cos(a[:, i])))
                 for a in pairs.values() for i in (0, 1))
    return frames * wall_seconds / traj.n_frames


def timed_md(sequence, out, wall, solvent):
    """Plain MD of the capped peptide for ``wall`` seconds of production, frames every ps (heavy atoms).

    Both solvents get the same treatment: build, minimise, 10 ps of untimed equilibration (JAMUN's
    chains start from the same built structure without one), then a timed LangevinMiddle 2 fs run
    with HBond constraints at 300 K on one CPU thread. GBn2 is the reference's own force field;
    TIP3P is amber14 + TIP3P water, PME, 1 nm padding.
    """
    import mdtraj

    topology, positions = build_peptide(sequence)
    if solvent == "gbn2":
        ff = forcefield()
        system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    else:
        ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        modeller = app.Modeller(topology, positions)
        modeller.addSolvent(ff, padding=1.0 * unit.nanometer)
        topology, positions = modeller.topology, modeller.positions
        system = ff.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                 constraints=app.HBonds)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(7)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                                {"Threads": "1"})
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    simulation.step(5000)
    peptide = [a.index for a in topology.atoms() if a.residue.name != "HOH"]
    path = os.path.join(out, f"{sequence}-{solvent}.dcd")
    simulation.reporters.append(app.DCDReporter(path, 500, atomSubset=peptide))
    start = time.time()
    while time.time() - start < wall:
        simulation.step(500)
    elapsed = time.time() - start
    del simulation
    traj = mdtraj.load(path, top=mdtraj.Topology.from_openmm(topology).subset(peptide))
    traj = traj.atom_slice(traj.topology.select("not element H"))
    return traj, elapsed, len(positions)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sequences", nargs="+")
    parser.add_argument("--reference", default=None, help="reference MD dir (one sequence)")
    parser.add_argument("--reference-root", default=None, help="dir holding one reference MD dir per sequence")
    parser.add_argument("--wall", type=float, default=300.0, help="wall seconds per method")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-tip3p", action="store_true")
    parser.add_argument("--tip3p-first-only", action="store_true",
                        help="run the TIP3P comparison for the first sequence only")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = tempfile.mkdtemp(prefix="jamun-bench-")
    for sequence in args.sequences:
        ref_dir = args.reference or os.path.join(args.reference_root, sequence)
        reference = load_heavy(ref_dir)
        ref_pairs = backbone_pairs(torsions(reference))
        rows = []

        # JAMUN: measure steps/s on a short run, then run for the wall budget
        probe = run_sampling(sequence, f"{work}/{sequence}-probe", model=args.model, steps=200, chains=args.chains,
                             progress=False, plot=False, overwrite=True)
        steps = max(100, int(args.wall * probe["steps_per_s"]) // 10 * 10)
        record = run_sampling(sequence, f"{work}/{sequence}-jamun", model=args.model, steps=steps,
                              chains=args.chains, interval=10, progress=False, plot=False, overwrite=True)
        jamun = load_heavy(f"{work}/{sequence}-jamun")
        # pooled chains: chain k's frames follow chain k-1's; reorder to time order before prefixes
        K, n = args.chains, jamun.n_frames // args.chains
        jamun = jamun[np.arange(n * K).reshape(K, n).T.ravel()]
        curve = jsd_curve(jamun, ref_pairs, record["wall_time_s"])
        single = load_heavy(f"{work}/{sequence}-jamun")[:n]  # one chain, for decorrelation
        rows.append((f"JAMUN K={K}, {jamun.n_frames} samples", record["wall_time_s"], curve,
                     decorrelation_seconds(single, record["wall_time_s"])))

        # plain MD, implicit solvent (the reference's force field), then explicit TIP3P: same wall budget
        solvents = ["gbn2"] if args.no_tip3p or (args.tip3p_first_only and sequence != args.sequences[0]) \
            else ["gbn2", "tip3p"]
        for solvent in solvents:
            traj, elapsed, atoms = timed_md(sequence, work, args.wall, solvent)
            label = "MD GBn2 2 fs" if solvent == "gbn2" else f"MD TIP3P 2 fs ({atoms} atoms)"
            rows.append((f"{label}, {traj.n_frames} ps", elapsed, jsd_curve(traj, ref_pairs, elapsed),
                         decorrelation_seconds(traj, elapsed)))

        print(f"\n{sequence}: reference {ref_dir} ({reference.n_frames} frames)")
        print(f"{'method':>40} {'wall s':>7} {'final JSD':>10} {'time to JSD 0.1':>22} {'decorrelation (wall s)':>23}")
        for label, wall, curve, decor in rows:
            decor_text = f"{decor:.2f}" if np.isfinite(decor) else f"> {wall / 3:.0f} (not reached)"
            print(f"{label:>40} {wall:>7.0f} {curve[-1][1]:>10.3f} {time_to(curve):>22} {decor_text:>23}")
        for label, _, curve, _ in rows:
            print(f"  {label}: " + ", ".join(f"{s:.0f}s:{j:.3f}" for s, j in curve))


if __name__ == "__main__":
    main()
