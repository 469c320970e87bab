"""jamun sample relaxes its samples by default; jamun relax resumes an interrupted relaxation exactly."""

import json

import mdtraj
import numpy as np
import pytest

from openmm_jamun.cli import main
from openmm_jamun.records import RunFiles
from openmm_jamun.trajectory import truncate_trajectory


@pytest.fixture(scope="module")
def relaxed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("relaxed") / "aa"
    assert main(["sample", "AA", "--out", str(out), "--steps", "40", "--chains", "2", "--interval", "10",
                 "--raw", "--quiet"]) == 0
    assert main(["relax", str(out), "--batch", "4", "--quiet"]) == 0  # two frames of two chains per batch
    return RunFiles(out)


def test_sample_writes_relaxed_all_atom_frames_in_the_chain_layout(relaxed_run):
    relaxed = mdtraj.load(relaxed_run.relaxed, top=relaxed_run.relaxed_topology)
    samples = mdtraj.load(relaxed_run.samples, top=relaxed_run.topology)
    assert relaxed.n_frames == samples.n_frames == 4 and relaxed.n_chains == 2
    hydrogens = [a for a in relaxed.topology.atoms if a.element.symbol == "H"]
    assert len(hydrogens) == 2 * 17 and relaxed.n_atoms == 2 * 32  # ACE-ALA-ALA-NME with its hydrogens, per chain
    heavy = relaxed.atom_slice(relaxed.topology.select("not element H"))
    assert [f"{a.residue.name}:{a.name}" for a in heavy.topology.atoms] == [
        f"{a.residue.name}:{a.name}" for a in samples.topology.atoms]
    shift = np.sqrt(((heavy.xyz - samples.xyz) ** 2).sum(-1).mean())
    assert 0 < shift < 0.05  # relaxed, not replaced: well under 0.5 Å RMS
    record = json.loads(open(relaxed_run.record).read())["relaxation"]
    assert record["frames"] == 4 and record["relaxed"]["frames"] == 8
    assert record["relaxed"]["valid_fraction"] > record["raw"]["valid_fraction"]
    assert record["planar_centres_finished"] == sum(batch["planar_centres_finished"] for batch in record["batches"])


def test_relax_resumes_after_the_last_whole_frame(relaxed_run):
    before = mdtraj.load(relaxed_run.relaxed, top=relaxed_run.relaxed_topology).xyz
    truncate_trajectory(relaxed_run.relaxed, 3)  # as if stopped while writing the second batch
    assert main(["relax", str(relaxed_run.directory), "--quiet"]) == 0
    after = mdtraj.load(relaxed_run.relaxed, top=relaxed_run.relaxed_topology).xyz
    assert after.shape == before.shape
    # The first batch is kept as it was; the second is relaxed again from the same start in the same batch.
    # A fresh CPU Context sums forces in another order, so the heavy atoms (restrained) agree to the
    # minimiser's precision, and methyl hydrogens (free rotors) may stop elsewhere.
    assert np.abs(after - before)[:2].max() == 0
    heavy = [a.index for a in mdtraj.load_topology(relaxed_run.relaxed_topology).atoms if a.element.symbol != "H"]
    np.testing.assert_allclose(after[:, heavy], before[:, heavy], atol=5e-3)
    assert json.loads(open(relaxed_run.record).read())["relaxation"]["relaxed"]["frames"] == 8
    for change, match in ((["--implicit", "gbn2"], "implicit 'gbn2'"), (["--batch", "8"], "batch_size 8")):
        with pytest.raises(SystemExit, match=match):
            main(["relax", str(relaxed_run.directory), *change, "--quiet"])


def test_relax_refuses_to_resume_frames_relaxed_another_way_and_restarts_on_request(relaxed_run):
    record = json.loads(open(relaxed_run.record).read())
    before = mdtraj.load(relaxed_run.relaxed, top=relaxed_run.relaxed_topology).xyz
    truncate_trajectory(relaxed_run.relaxed, 2)
    settings = record["relaxation"]["settings"]
    del settings["torsion_restraint_k_kj_per_mol_rad2"]  # as a relaxation without torsion restraints wrote it
    open(relaxed_run.record, "w").write(json.dumps(record))
    with pytest.raises(SystemExit, match="torsion_restraint_k_kj_per_mol_rad2 300.0 .the run has 'not recorded'"):
        main(["relax", str(relaxed_run.directory), "--quiet"])
    assert mdtraj.load(relaxed_run.relaxed, top=relaxed_run.relaxed_topology).n_frames == 2  # nothing written
    assert main(["relax", str(relaxed_run.directory), "--restart", "--quiet"]) == 0
    after = mdtraj.load(relaxed_run.relaxed, top=relaxed_run.relaxed_topology).xyz
    np.testing.assert_allclose(after, before, atol=5e-3)  # every frame relaxed again, as the first time
    relaxation = json.loads(open(relaxed_run.record).read())["relaxation"]
    assert relaxation["relaxed"]["frames"] == 8
    assert relaxation["settings"]["torsion_restraint_k_kj_per_mol_rad2"] == 300.0


def test_analyze_reports_raw_and_relaxed_side_by_side(relaxed_run, tmp_path):
    from openmm import unit

    from openmm_jamun.data.md import run_md

    run_md("AA", str(tmp_path / "md"), ns=0.02, seed=1, threads=1, equilibration=1 * unit.picosecond,
           progress=False, chunk_frames=10)
    assert main(["analyze", str(relaxed_run.directory), "--reference", str(tmp_path / "md"), "--out",
                 str(tmp_path / "analysis"), "--lag", "2", "--states", "1"]) == 0
    result = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    relaxed = result["relaxed"]
    assert relaxed["frames"] == result["inputs"]["sample_frames"] == 8
    assert 0 < relaxed["rms_shift_nm"] < 0.05
    assert relaxed["torsions"]["mean_backbone_1d"] is not None
    assert relaxed["validity"]["valid_fraction"] > result["validity"]["valid_fraction"]


def test_a_resumed_sample_run_relaxes_every_frame_again_when_its_relaxation_is_stale(tmp_path):
    out = tmp_path / "aa"
    assert main(["sample", "AA", "--out", str(out), "--steps", "20", "--chains", "1", "--interval", "10",
                 "--quiet"]) == 0
    files = RunFiles(out)
    record = json.loads(open(files.record).read())
    del record["relaxation"]["settings"]["side_restraint"]  # as a relaxation without side restraints wrote it
    open(files.record, "w").write(json.dumps(record))
    with pytest.warns(UserWarning, match="relaxed another way"):
        assert main(["sample", "AA", "--out", str(out), "--resume", "--steps", "40", "--quiet"]) == 0
    relaxation = json.loads(open(files.record).read())["relaxation"]
    assert relaxation["frames"] == 4 and "side_restraint" in relaxation["settings"]
    assert mdtraj.load(files.relaxed, top=files.relaxed_topology).n_frames == 4
