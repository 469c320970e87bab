"""`jamun sample`: the main job end to end on the analytic denoiser, resume, bad input; torsion analysis."""

import json
import warnings

import mdtraj
import numpy as np
import pytest
import torch
from openmm import app, unit

from openmm_jamun.analysis.torsions import jsd_1d, jsd_2d
from openmm_jamun.cli import main
from openmm_jamun.data.build import build_peptide, write_pdb
from openmm_jamun.model.featurize import featurize
from openmm_jamun.model.gaussian import gaussian_denoiser
from openmm_jamun.sample import run_sampling

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def gaussian_model(tmp_path_factory):
    """The analytic denoiser centred on ACE-ALA-NME's heavy atoms, saved as a TorchScript file."""
    topology, positions = build_peptide("A")
    mu = positions.value_in_unit(unit.nanometer)[featurize(topology).atom_indices]
    path = tmp_path_factory.mktemp("model") / "gauss.pt"
    torch.jit.save(gaussian_denoiser(mu, s=0.02, sigma=0.04), str(path))
    return str(path)


def test_sample_writes_frames_log_checkpoint_and_plot(gaussian_model, tmp_path):
    out = tmp_path / "run"
    code = main(["sample", "A", "--model", gaussian_model, "--steps", "200", "--interval", "10", "--out", str(out),
                 "--walk", "--quiet"])
    assert code == 0
    record = json.loads((out / "run.json").read_text())
    assert record["frames"] == 20 and record["steps_done"] == 200 and record["steps_per_s"] > 0
    samples = mdtraj.load(str(out / "samples.dcd"), top=str(out / "topology.pdb"))
    walk = mdtraj.load(str(out / "walk.dcd"), top=str(out / "topology.pdb"))
    assert samples.n_frames == walk.n_frames == 20 and samples.n_atoms == 10
    # jumps are x̂(y) = μ + s²/(s²+σ²)(y − μ): closer to μ than the walk
    mu = app.PDBFile(str(out / "topology.pdb")).getPositions(asNumpy=True)._value
    assert np.abs(samples.xyz - mu).mean() < np.abs(walk.xyz - mu).mean()
    assert (out / "ramachandran.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "log.csv").read_text().count("\n") == 3  # header + 2 rows (every 100 steps)
    assert record["validity"]["frames"] == 20 and record["validity"]["fell_apart_fraction"] == 0.0


def test_a_walk_that_falls_apart_is_flagged(tmp_path):
    """A denoiser that barely denoises (data spread s = 1 nm) lets the atoms drift apart: the run
    warns and records it, rather than handing back the frames as if they were an ensemble."""
    topology, positions = build_peptide("A")
    mu = positions.value_in_unit(unit.nanometer)[featurize(topology).atom_indices]
    loose = tmp_path / "loose.pt"
    torch.jit.save(gaussian_denoiser(mu, s=1.0, sigma=0.04), str(loose))
    with pytest.warns(UserWarning, match="the walk fell apart"):
        record = run_sampling("A", str(tmp_path / "run"), model=str(loose), steps=300, seed=0, progress=False,
                              plot=False)
    assert record["validity"]["fell_apart_fraction"] > 0.5
    assert json.loads((tmp_path / "run" / "run.json").read_text())["validity"] == record["validity"]


def test_resume_appends_exactly_the_missing_frames(gaussian_model, tmp_path):
    whole = run_sampling("A", str(tmp_path / "whole"), model=gaussian_model, steps=200, seed=4, progress=False,
                         plot=False)
    split = tmp_path / "split"
    run_sampling("A", str(split), model=gaussian_model, steps=50, seed=4, progress=False, plot=False)
    early_checkpoint = (split / "walk.chk").read_bytes()
    run_sampling("A", str(split), model=gaussian_model, steps=100, resume=True, progress=False, plot=False)
    # a crash after frames 6-10 were written but before their checkpoint: back to the step-50 checkpoint
    (split / "walk.chk").write_bytes(early_checkpoint)
    run_sampling("A", str(split), model=gaussian_model, steps=200, resume=True, progress=False, plot=False)
    top = str(tmp_path / "whole" / "topology.pdb")
    a = mdtraj.load(str(tmp_path / "whole" / "samples.dcd"), top=top).xyz
    b = mdtraj.load(str(split / "samples.dcd"), top=top).xyz
    assert whole["frames"] == 20 and b.shape == a.shape
    np.testing.assert_allclose(b, a, atol=1e-4)  # the same walk: the checkpoint carries the RNG state


def test_ctrl_c_leaves_a_valid_trajectory_and_checkpoint(gaussian_model, tmp_path):
    """SIGINT (Ctrl-C) mid-run: exit code 130, readable trajectories that agree with the
    checkpoint, and --resume continues to exactly the requested number of frames."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "openmm_jamun.cli", "sample", "A", "--model", gaussian_model, "--interval", "10",
           "--out", str(out), "--walk", "--quiet", "--threads", "1"]
    process = subprocess.Popen(cmd + ["--steps", "10000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = out / "samples.dcd"
    deadline = time.time() + 120
    while time.time() < deadline and not (samples.exists() and samples.stat().st_size > 20_000):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()[-2000:]
    record = json.loads((out / "run.json").read_text())
    top = str(out / "topology.pdb")
    done = mdtraj.load(str(samples), top=top).n_frames
    assert done >= 10 and mdtraj.load(str(out / "walk.dcd"), top=top).n_frames == done
    assert record["frames"] == done
    subprocess.run(cmd + ["--steps", str(10 * (done + 5)), "--resume"], check=True, timeout=300)
    assert mdtraj.load(str(samples), top=top).n_frames == done + 5
    assert mdtraj.load(str(out / "walk.dcd"), top=top).n_frames == done + 5


def test_ctrl_c_while_saving_waits_until_bias_and_checkpoint_are_both_written(tmp_path):
    """A metadynamics run's bias and walk checkpoint are one pair: Ctrl-C between the two writes
    takes effect after both, through the handler it would have reached (KeyboardInterrupt by
    default; step_until's stop request inside a walk). Run in a subprocess: signal handlers belong
    to a process's main thread, which a pytest-xdist worker's test need not be. An ignored SIGINT
    stays ignored, so the script installs Python's default handler first."""
    import subprocess
    import sys

    script = """
import os, signal, sys
from types import SimpleNamespace
from openmm_jamun.records import RunFiles
from openmm_jamun.sample import save_checkpoint

signal.signal(signal.SIGINT, signal.default_int_handler)  # a pytest-xdist worker's children inherit SIGINT ignored
written = []
def save_bias(path):
    written.append("bias")
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the two writes
simulation = SimpleNamespace(metadynamics=SimpleNamespace(save=save_bias),
                             saveCheckpoint=lambda path: written.append("checkpoint"))
files = RunFiles(sys.argv[1])
try:
    save_checkpoint(simulation, files)
    print("no interrupt")
except KeyboardInterrupt:
    print("interrupted after", written)
requests = []
signal.signal(signal.SIGINT, lambda signum, frame: requests.append(signum))
save_checkpoint(simulation, files)
print("handler kept", signal.getsignal(signal.SIGINT) is not signal.default_int_handler, "requests", len(requests),
      "written", written)
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "interrupted after ['bias', 'checkpoint']", result.stdout
    assert lines[1] == "handler kept True requests 1 written ['bias', 'checkpoint', 'bias', 'checkpoint']", result.stdout


def test_bad_inputs_give_clear_errors_and_write_nothing(gaussian_model, tmp_path, capsys):
    out = tmp_path / "out"
    # --steps 0 and negative
    for steps in ("0", "-5"):
        with pytest.raises(SystemExit):
            main(["sample", "A", "--model", gaussian_model, "--steps", steps, "--out", str(out)])
    assert "positive" in capsys.readouterr().err
    # a PDB with a residue the model does not know
    topology, positions = build_peptide("A", minimize=False)
    list(topology.residues())[1].name = "XYZ"
    pdb = tmp_path / "odd.pdb"
    write_pdb(pdb, topology, positions)
    with pytest.raises(SystemExit, match="unsupported residue.*XYZ"):
        main(["sample", str(pdb), "--model", gaussian_model, "--steps", "10", "--out", str(out)])
    # a model for another topology
    with pytest.raises(SystemExit, match="denoiser is for 10 atoms"):
        main(["sample", "AD", "--model", gaussian_model, "--steps", "10", "--out", str(out)])
    # an unknown residue letter, for sample and export alike
    with pytest.raises(SystemExit, match="unknown residue letter"):
        main(["sample", "AZ", "--model", gaussian_model, "--steps", "10", "--out", str(out)])
    with pytest.raises(SystemExit, match="^error: unknown residue letter"):
        main(["export", "AZ", "--model", gaussian_model, "--out", str(tmp_path / "az.pt")])
    with pytest.raises(SystemExit, match="^error: the directory of .*/missing/a.pt does not exist"):
        main(["export", "A", "--model", gaussian_model, "--out", str(tmp_path / "missing" / "a.pt")])
    with pytest.raises(SystemExit, match="^error: .*gauss.pt is not an openmm-jamun training checkpoint"):
        main(["release", gaussian_model, "--out", str(tmp_path / "released.pt")])  # a TorchScript file
    assert not out.exists()
    # an output directory that exists: untouched without --overwrite
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists"):
        main(["sample", "A", "--model", gaussian_model, "--steps", "10", "--out", str(out)])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(SystemExit, match="cannot resume"):
        main(["sample", "A", "--model", gaussian_model, "--steps", "10", "--out", str(out), "--resume"])
    fresh = tmp_path / "fresh"
    # fewer steps than the interval (no sample would be written), an unknown platform, --out a file
    with pytest.raises(SystemExit, match=r"steps \(5\) is less than the interval"):
        main(["sample", "A", "--model", gaussian_model, "--steps", "5", "--out", str(fresh)])
    with pytest.raises(SystemExit, match="platform 'Nope' is not available here; available: .*CPU"):
        main(["sample", "A", "--model", gaussian_model, "--steps", "10", "--out", str(fresh), "--platform", "Nope"])
    with pytest.raises(SystemExit, match="is a file, not a directory"):
        main(["sample", "A", "--model", gaussian_model, "--steps", "10", "--out", str(out / "keep.txt")])
    assert not fresh.exists()


def test_input_structures_the_model_cannot_read_are_refused(gaussian_model, tmp_path):
    """Two peptide chains, heavy atoms under names the model does not know (a renamed cap carbon) or
    D amino acids are errors (OpenMM maps CHARMM names such as CAY itself); a PDBx/mmCIF file is read as such."""
    from openmm_jamun.inputs import read_input

    topology, positions = build_peptide("A", minimize=False)
    modeller = app.Modeller(topology, positions)
    modeller.add(topology, positions + 2.0 * unit.nanometer)
    two = tmp_path / "two.pdb"
    write_pdb(two, modeller.topology, modeller.positions)
    with pytest.raises(ValueError, match="2 peptide chains"):
        read_input(str(two))
    next(a for a in topology.atoms() if a.name == "CH3").name = "CM"
    renamed = tmp_path / "renamed.pdb"
    write_pdb(renamed, topology, positions)
    with pytest.raises(ValueError, match=r"CM \(ACE\) .*unknown to the model"):
        read_input(str(renamed))
    # a mirror image: every residue D (GLY, achiral, has no CB and is left out)
    topology, positions = build_peptide("AG", minimize=False)
    mirror = tmp_path / "mirror.pdb"
    write_pdb(mirror, topology, positions * np.array([-1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="ALA2 is a D amino acid.*L amino acids only"):
        read_input(str(mirror))
    topology, positions = build_peptide("A", minimize=False)
    cif = tmp_path / "a.cif"
    with open(cif, "w") as handle:
        app.PDBxFile.writeFile(topology, positions, handle)
    read, _, name = read_input(str(cif))
    assert name == "a" and read.getNumAtoms() == topology.getNumAtoms()


def test_resume_keeps_the_run_settings_and_refuses_others(gaussian_model, tmp_path):
    out = tmp_path / "run"
    run_sampling("A", str(out), model=gaussian_model, steps=20, seed=3, progress=False, plot=False)
    for change, match in ((dict(chains=2), "chains 2 \\(the run has 1\\)"), (dict(seed=0), "seed 0 \\(the run has 3\\)"),
                          (dict(write_walk=True), "write_walk"), (dict(platform="Reference"), "platform")):
        with pytest.raises(ValueError, match=match):
            run_sampling("A", str(out), model=gaussian_model, steps=40, resume=True, progress=False, plot=False,
                         **change)
    with pytest.raises(ValueError, match="with input 'AA' \\(the run has 'A'\\)"):
        run_sampling("AA", str(out), steps=40, resume=True, progress=False, plot=False)
    # the same settings given again, or none: it continues
    record = run_sampling("a", str(out), model=gaussian_model, steps=40, chains=1, platform="cpu", resume=True,
                          progress=False, plot=False)
    assert record["frames"] == 4 and record["chains"] == 1 and record["seed"] == 3


def test_jsd_known_values():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, 20000)
    assert jsd_1d(a, a) == 0.0
    # base e, as the paper (scipy's default): disjoint supports give √ln 2
    assert jsd_1d(rng.uniform(-3, -1, 5000), rng.uniform(1, 3, 5000)) == pytest.approx(np.sqrt(np.log(2)))
    b = rng.uniform(-np.pi, np.pi, 20000)
    assert 0 < jsd_1d(a, b) < 0.1  # same law, finite samples
    pairs = np.stack([a, b], 1)
    assert jsd_2d(pairs, pairs) == 0.0
    assert jsd_2d(pairs * 0.1 + 2.0, pairs * 0.1 - 2.0) == pytest.approx(np.sqrt(np.log(2)))
    from scipy.spatial.distance import jensenshannon

    p, q = np.histogram(a, 100, (-np.pi, np.pi))[0], np.histogram(b, 100, (-np.pi, np.pi))[0]
    assert jsd_1d(a, b) == pytest.approx(jensenshannon(p, q))  # the published evaluation's call


def test_analyze_writes_json_and_valid_pngs(md_root, tmp_path):
    """Samples unlike the reference (its mirror image, as a bare trajectory with --top): analysis.json holds
    the figures of these samples against that reference (not the reference against itself), and the plots."""
    from openmm_jamun.analysis.report import load_heavy
    from openmm_jamun.analysis.torsions import torsion_jsds

    top = str(md_root / "A" / "topology.pdb")
    mirrored = mdtraj.load(str(md_root / "A" / "traj.xtc"), top=top)
    mirrored.xyz = mirrored.xyz * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    mirrored.save_dcd(str(tmp_path / "mirrored.dcd"))
    out = tmp_path / "analysis"
    assert main(["analyze", str(tmp_path / "mirrored.dcd"), "--top", top, "--reference",
                 str(md_root / "A"), "--out", str(out), "--lag", "2", "--states", "2"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    expected = torsion_jsds(load_heavy(str(tmp_path / "mirrored.dcd"), top), load_heavy(str(md_root / "A")))
    assert result["torsions"]["mean_backbone_1d"] == pytest.approx(expected["mean_backbone_1d"])
    assert result["torsions"]["mean_backbone_1d"] > 0.5 and result["validity"]["failing_fraction"]["chirality"] == 1.0
    assert result["inputs"]["sample_frames"] == mirrored.n_frames
    for name in ("ramachandran.png", "tica.png", "states.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(SystemExit, match="different molecules"):
        main(["analyze", str(md_root / "A"), "--reference", str(md_root / "uGAS"), "--out", str(tmp_path / "x")])


def test_analyze_jump_of_noised_reference_frames(tmp_path):
    """--model jumps σ-noised reference frames: the shipped denoiser (capped dipeptides) must bring
    them closer to the reference than the noise left them, and their torsion JSDs are reported."""
    from openmm_jamun.data.md import run_md

    run_md("AA", str(tmp_path / "AA"), ns=0.02, caps=True, seed=1, threads=1, equilibration=1 * unit.picosecond,
           progress=False, chunk_frames=10)
    out = tmp_path / "analysis"
    assert main(["analyze", str(tmp_path / "AA"), "--reference", str(tmp_path / "AA"), "--out", str(out),
                 "--lag", "2", "--states", "1", "--model", "default"]) == 0
    jump = json.loads((out / "analysis.json").read_text())["reference_jump"]
    assert jump["frames"] > 0 and jump["sigma_nm"] == pytest.approx(0.04)
    assert 0.0 < jump["rms_error_nm"] < 0.7 * jump["noise_rms_nm"]
    assert 0.0 <= jump["torsions"]["mean_backbone_1d"] <= 1.0
    assert 0.0 < jump["score_asymmetry"]["mean"] <= jump["score_asymmetry"]["max"] < 1.0
    with pytest.raises(SystemExit, match="not found"):
        main(["analyze", str(tmp_path / "AA"), "--reference", str(tmp_path / "AA"), "--out", str(tmp_path / "y"),
              "--model", str(tmp_path / "missing.pt")])
    assert not (tmp_path / "y").exists()  # a bad --model fails before any output is written


def test_score_asymmetry_is_zero_for_a_gradient_field_and_measures_a_curl():
    """The Gaussian jump is a gradient field's (ratio 0); x̂ = y + ε R_z y with R_z the rotation generator
    about z has D − Dᵀ = 2ε R_z and D + Dᵀ = 2 I per atom: the ratio is ε √(2/3)."""
    from openmm_jamun.analysis.ensemble import score_asymmetry
    from openmm_jamun.model.gaussian import gaussian_example

    denoiser, topology, mu = gaussian_example(6)
    reference = mdtraj.Trajectory(np.repeat(mu.value_in_unit(unit.nanometer)[None], 3, 0).astype(np.float32),
                                  mdtraj.Topology.from_openmm(topology))
    assert score_asymmetry(denoiser, reference)["mean"] == pytest.approx(0.0, abs=1e-6)

    class Curl(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.num_atoms, self.sigma = 6, 0.04
            self.generator = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])

        def forward(self, positions):
            return positions + 0.1 * positions @ self.generator.T

    result = score_asymmetry(Curl(), reference)
    assert result["frames"] == 3 and result["mean"] == pytest.approx(0.1 * (2 / 3) ** 0.5, rel=1e-5)
    with pytest.raises(ValueError, match="one-chain export"):
        score_asymmetry(Curl(), reference.atom_slice(range(5)))


def test_metropolis_sampling_records_its_acceptance_and_refuses_a_direct_model(tmp_path):
    """--metropolis with an energy model (here the shipped weights' energy form, exported for AA): the
    acceptance rate is in log.csv and run.json. With the direct model it is an error, and nothing is written."""
    import torch

    from openmm_jamun.inputs import read_input
    from openmm_jamun.model.export import export_denoiser, load_checkpoint
    from openmm_jamun.model.registry import resolve_model

    energy, _ = load_checkpoint(resolve_model("default"), averaged=True, parametrization="energy")
    topology, _, _ = read_input("AA")
    torch.jit.save(export_denoiser(energy, topology), str(tmp_path / "aa-energy.pt"))
    with pytest.warns(UserWarning, match="accepted .* of its steps: it moves slowly"):  # at JAMUN's step
        record = run_sampling("AA", str(tmp_path / "run"), model=str(tmp_path / "aa-energy.pt"), steps=100,
                              interval=10, metropolis=True, progress=False, plot=False, relax=False)
    assert record["metropolis"] and record["acceptance"]["proposed"] == 100
    assert 0 <= record["acceptance"]["rate"] < 0.5
    assert "Acceptance Rate" in (tmp_path / "run" / "log.csv").read_text().splitlines()[0]
    # a quarter of JAMUN's step: the energy error per step shrinks, so more proposals are accepted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = run_sampling("AA", str(tmp_path / "small"), model=str(tmp_path / "aa-energy.pt"), steps=100,
                             interval=10, metropolis=True, progress=False, plot=False, relax=False, timestep_ps=0.01)
    assert not [w for w in caught if "of its steps" in str(w.message)]  # no low-acceptance warning here
    assert small["timestep_ps"] == 0.01 and small["acceptance"]["rate"] > record["acceptance"]["rate"] + 0.2
    with pytest.raises(ValueError, match="timestep_ps"):
        run_sampling("AA", str(tmp_path / "small"), steps=200, resume=True, timestep_ps=0.02, progress=False)
    with pytest.raises(ValueError, match="needs an energy-parametrised denoiser"):
        run_sampling("AA", str(tmp_path / "direct"), steps=20, metropolis=True, progress=False, plot=False)
    assert not (tmp_path / "direct").exists()


def test_metadynamics_run_writes_weights_frame_by_frame_resumes_and_is_analysed(md_root, tmp_path):
    """--metad on 2 chains: weights.csv aligned with samples.dcd frame by frame and chain by chain
    (also after a resume), other bias settings on resume and bad options are errors that write
    nothing, and jamun analyze weights the samples in the pooled (chain-major) order."""
    from openmm_jamun.analysis.report import load_heavy, sample_weights
    from openmm_jamun.analysis.torsions import torsion_jsds
    from openmm_jamun.model.gaussian import GaussianDenoiser

    topology, positions = build_peptide("A")
    mu = positions.value_in_unit(unit.nanometer)[featurize(topology).atom_indices]
    two = GaussianDenoiser(torch.as_tensor(np.concatenate([mu, mu]), dtype=torch.float32), 0.02, 0.04)
    two.num_chains = 2
    model = str(tmp_path / "gauss2.pt")
    torch.jit.save(torch.jit.script(two), model)

    out = tmp_path / "metad"
    base = ["sample", "A", "--model", model, "--interval", "10", "--chains", "2", "--out", str(out),
            "--quiet", "--raw", "--metad", "psi:1,phi:1"]
    assert main([*base, "--steps", "100", "--metad-interval", "20"]) == 0
    rows = np.loadtxt(out / "weights.csv", delimiter=",", skiprows=1)
    assert rows.shape == (20, 6)
    np.testing.assert_array_equal(rows[:, 0], np.repeat(np.arange(10), 2))  # frame-major, both chains
    np.testing.assert_array_equal(rows[:, 1], np.tile([0, 1], 10))
    np.testing.assert_array_equal(rows[::2, 2], np.arange(10, 101, 10))  # frame i is step 10(i+1)
    record = json.loads((out / "run.json").read_text())
    assert record["metad"]["torsions"] == "psi:1,phi:1" and record["metadynamics"]["deposits"] == 5
    assert record["metad"]["angle_switch"] == 0.1  # the torsion bias's bond-angle switch, kept for a resume
    assert record["metadynamics"]["exact"] is False  # the analytic Gaussian here is a direct model
    assert (out / "bias.npz").is_file()
    assert main([*base, "--steps", "200", "--resume"]) == 0  # the run's own deposit interval, kept
    rows = np.loadtxt(out / "weights.csv", delimiter=",", skiprows=1)
    assert rows.shape == (40, 6) and json.loads((out / "run.json").read_text())["metadynamics"]["deposits"] == 10
    with pytest.raises(SystemExit, match="bias_factor"):
        main([*base, "--steps", "300", "--resume", "--bias-factor", "5"])
    for bad, match in ((["--metad", "chi1:1"], "chi1:1"), (["--bias-factor", "5"], "--metad"),
                       (["--metad", "phi:1", "--bias-factor", "1"], "bias_factor must be > 1")):
        with pytest.raises(SystemExit, match=match):
            main(["sample", "A", "--model", model, "--chains", "2", "--out", str(tmp_path / "bad"), *bad])
        assert not (tmp_path / "bad").exists()

    # pooled order: chain 0's frames, then chain 1's, each with its own row of weights.csv
    samples, reference = load_heavy(str(out)), load_heavy(str(md_root / "A"))
    weights = sample_weights(str(out), samples.n_frames)
    expected = np.concatenate([rows[rows[:, 1] == chain, 5] for chain in (0, 1)])
    np.testing.assert_allclose(weights, expected / expected.sum())
    analysis = tmp_path / "analysis"
    assert main(["analyze", str(out), "--reference", str(md_root / "A"), "--out", str(analysis), "--lag", "2",
                 "--states", "1"]) == 0
    result = json.loads((analysis / "analysis.json").read_text())
    assert result["weights"]["effective_sample_size"] == pytest.approx(1 / np.sum(weights ** 2))
    weighted = torsion_jsds(samples, reference, weights)
    assert result["torsions"]["mean_backbone_1d"] == pytest.approx(weighted["mean_backbone_1d"])
    # a bare trajectory of the run takes the same weights through --weights
    bare = ["analyze", str(out / "samples.dcd"), "--top", str(out / "topology.pdb"), "--reference",
            str(md_root / "A"), "--lag", "2", "--states", "1"]
    assert main([*bare, "--weights", str(out / "weights.csv"), "--out", str(tmp_path / "bare")]) == 0
    result = json.loads((tmp_path / "bare" / "analysis.json").read_text())
    assert result["torsions"]["mean_backbone_1d"] == pytest.approx(weighted["mean_backbone_1d"])
    with pytest.raises(SystemExit, match="weights file"):
        main([*bare, "--weights", str(tmp_path / "none.csv"), "--out", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()
