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
from openmm_jamun.data.build import build_peptide
from openmm_jamun.data.md import run_md
from openmm_jamun.sample import run_sampling


def jsd_curve(traj, reference_pairs, wall_seconds, points=12):
    """(wall seconds, mean φ/ψ JSD of the first frames) at log-spaced prefixes; frames are uniform in time."""
    pairs = backbone_pairs(torsions(traj))
    n = traj.n_frames
    counts = np.unique(np.geomspace(max(10, n // 200), n, points).astype(int))
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


def run_tip3p(sequence, out, wall):
    """Explicit-solvent MD (amber14 + TIP3P, PME, 1 nm padding, 2 fs) for ``wall`` seconds; frames every ps."""
    topology, positions = build_peptide(sequence)
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(topology, positions)
    modeller.addSolvent(ff, padding=1.0 * unit.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                             constraints=app.HBonds)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    simulation = app.Simulation(modeller.topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                                {"Threads": "1"})
    simulation.context.setPositions(modeller.positions)
    simulation.minimizeEnergy()
    simulation.step(5000)  # 10 ps equilibration, not timed
    peptide = [a.index for a in modeller.topology.atoms() if a.residue.name != "HOH"]
    path = os.path.join(out, "tip3p.dcd")
    simulation.reporters.append(app.DCDReporter(path, 500, atomSubset=peptide))
    start = time.time()
    while time.time() - start < wall:
        simulation.step(500)
    elapsed = time.time() - start
    del simulation
    import mdtraj

    traj = mdtraj.load(path, top=mdtraj.Topology.from_openmm(modeller.topology).subset(peptide))
    traj = traj.atom_slice(traj.topology.select("not element H"))
    return traj, elapsed, len(modeller.positions)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sequences", nargs="+")
    parser.add_argument("--reference", default=None, help="reference MD dir (one sequence)")
    parser.add_argument("--reference-root", default=None, help="dir holding one reference MD dir per sequence")
    parser.add_argument("--wall", type=float, default=300.0, help="wall seconds per method")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-tip3p", action="store_true")
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
        rows.append((f"JAMUN K={K}", record["wall_time_s"], curve,
                     decorrelation_seconds(single, record["wall_time_s"])))

        # plain MD, implicit solvent: same wall budget
        speed = run_md(sequence, f"{work}/{sequence}-probe-md", ns=0.01, threads=1, progress=False,
                       equilibration=1 * unit.picosecond)["ns_per_day"]
        ns = max(0.01, round(args.wall * speed / 86400, 3))
        md = run_md(sequence, f"{work}/{sequence}-md", ns=ns, threads=1, progress=False, seed=7)
        md_traj = load_heavy(f"{work}/{sequence}-md")
        curve = jsd_curve(md_traj, ref_pairs, md["wall_time_s"])
        rows.append(("MD GBn2 2 fs", md["wall_time_s"], curve, decorrelation_seconds(md_traj, md["wall_time_s"])))

        if not args.no_tip3p:
            traj, elapsed, atoms = run_tip3p(sequence, work, args.wall)
            curve = jsd_curve(traj, ref_pairs, elapsed)
            rows.append((f"MD TIP3P ({atoms} atoms)", elapsed, curve, decorrelation_seconds(traj, elapsed)))

        print(f"\n{sequence}: reference {ref_dir} ({reference.n_frames} frames)")
        print(f"{'method':>24} {'wall s':>7} {'final JSD':>10} {'time to JSD 0.1':>22} {'decorrelation (wall s)':>23}")
        for label, wall, curve, decor in rows:
            print(f"{label:>24} {wall:>7.0f} {curve[-1][1]:>10.3f} {time_to(curve):>22} {decor:>23.2f}")
        for label, _, curve, _ in rows:
            print(f"  {label}: " + ", ".join(f"{s:.0f}s:{j:.3f}" for s, j in curve))


if __name__ == "__main__":
    main()
