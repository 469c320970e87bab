"""JumpReporter: formats, OpenMM's reporter protocol, restarts, cost."""

import struct

import mdtraj
import numpy as np
import pytest
from openmm import app, unit

import openmm_jamun as oj
from openmm_jamun import force as force_module
from openmm_jamun.trajectory import truncate_trajectory
from conftest import make_walk

SIGMA, S = 0.04, 0.05


@pytest.mark.parametrize("ext", [".dcd", ".xtc", ".pdb", ".h5"])
def test_formats_hold_the_denoised_frames(gaussian10, ext, tmp_path):
    denoiser, topology, mu = gaussian10
    simulation, _ = make_walk(denoiser, topology, mu)
    walk = []

    class Walk:
        def describeNextReport(self, sim):
            return {"steps": 3 - sim.currentStep % 3, "periodic": False, "include": ["positions"]}

        def report(self, sim, state):
            walk.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))

    path = tmp_path / f"jumps{ext}"
    reporter = oj.JumpReporter(str(path), 3)
    simulation.reporters += [Walk(), reporter]
    simulation.step(12)
    reporter.close()
    frames = (mdtraj.load(str(path)) if ext == ".h5" else
              mdtraj.load(str(path), top=mdtraj.Topology.from_openmm(topology))).xyz
    expected = mu._value + S**2 / (S**2 + SIGMA**2) * (np.array(walk) - mu._value)
    atol = 2e-3 if ext in (".xtc", ".pdb") else 1e-5  # XTC and PDB store 0.001 nm / 0.01 nm... precision
    assert frames.shape == (4, 10, 3)
    np.testing.assert_allclose(frames, expected, atol=atol)


def test_unknown_extension_and_missing_append_target(tmp_path):
    with pytest.raises(ValueError, match="trajectory format"):
        oj.JumpReporter(str(tmp_path / "x.txt"), 1)
    with pytest.raises(FileNotFoundError, match="cannot append"):
        oj.JumpReporter(str(tmp_path / "x.dcd"), 1, append=True)
    with pytest.raises(ValueError, match="reportInterval"):
        oj.JumpReporter(str(tmp_path / "x.dcd"), 0)
    assert list(tmp_path.iterdir()) == []


def test_reporter_costs_no_extra_force_evaluation(gaussian10, tmp_path, monkeypatch):
    denoiser, topology, mu = gaussian10
    calls = {"n": 0}
    original = force_module.ScoreComputation.__call__

    def counting(self, state):
        calls["n"] += 1
        return original(self, state)

    monkeypatch.setattr(force_module.ScoreComputation, "__call__", counting)
    counts = []
    for with_reporter in (False, True):
        simulation, _ = make_walk(denoiser, topology, mu, backend="python")
        if with_reporter:
            simulation.reporters.append(oj.JumpReporter(str(tmp_path / "j.dcd"), 1))
        calls["n"] = 0
        simulation.step(20)
        counts.append(calls["n"])
    assert counts[0] == counts[1] and counts[0] >= 20


def test_side_by_side_with_openmm_reporters_and_checkpoint_restart(gaussian10, tmp_path):
    denoiser, topology, mu = gaussian10
    log, walk, jumps, chk = (tmp_path / n for n in ("log.csv", "walk.dcd", "jumps.dcd", "walk.chk"))

    def attach(simulation, append):
        simulation.reporters += [
            app.StateDataReporter(str(log), 5, step=True, potentialEnergy=True, temperature=True, append=append),
            app.DCDReporter(str(walk), 5, append=append),
            app.CheckpointReporter(str(chk), 10),
            oj.JumpReporter(str(jumps), 5, append=append),
        ]

    simulation, _ = make_walk(denoiser, topology, mu, seed=5)
    attach(simulation, append=False)
    simulation.step(30)
    for reporter in simulation.reporters:
        if hasattr(reporter, "close"):
            reporter.close()
    del simulation

    # a new process would do exactly this: same system, load the checkpoint, append
    simulation, _ = make_walk(denoiser, topology, mu, seed=99)
    simulation.loadCheckpoint(str(chk))
    assert simulation.currentStep == 30
    attach(simulation, append=True)
    simulation.step(20)
    simulation.reporters[-1].close()
    simulation.reporters[1]._out.close()  # DCDReporter closes its file only when collected

    top = mdtraj.Topology.from_openmm(topology)
    y = mdtraj.load(str(walk), top=top).xyz
    x = mdtraj.load(str(jumps), top=top).xyz
    assert y.shape[0] == x.shape[0] == 10
    # each jump frame is the denoised walk frame of the same step
    expected = mu._value + S**2 / (S**2 + SIGMA**2) * (y - mu._value)
    np.testing.assert_allclose(x, expected, atol=1e-5)
    rows = [line for line in log.read_text().splitlines() if not line.startswith("#")]
    assert [int(row.split(",")[0]) for row in rows] == list(range(5, 55, 5))
    # energy reported is exactly 0: no surrogate to mislead
    assert {float(row.split(",")[1]) for row in rows} == {0.0}


def dcd_header(path):
    """The DCD header fields OpenMM's DCDFile writes: frames, first step, interval, last step, dt (ps)."""
    head = path.read_bytes()[:92]
    frames, first, interval, last = struct.unpack("<4i", head[8:24])
    dt_ps = struct.unpack("<f", head[44:48])[0] * 0.04888821  # AKMA time units
    return head, dict(frames=frames, first=first, interval=interval, last=last, dt_ps=round(dt_ps, 6))


def xtc_steps_times(path):
    with mdtraj.formats.XTCTrajectoryFile(str(path)) as handle:
        xyz, times, steps, _ = handle.read()
    return xyz, steps.tolist(), np.round(times.astype(float), 4).tolist()


@pytest.mark.parametrize("restart", ["append", "checkpoint"])
@pytest.mark.parametrize("ext", [".dcd", ".xtc"])
def test_headers_match_openmm_reporters_fresh_and_appended(gaussian10, tmp_path, ext, restart):
    """Side by side with OpenMM's own DCD/XTC reporter at the same interval, fresh and continued with
    append=True (plainly, or as `jamun sample --resume` does: back to a checkpoint, cut, append)."""
    denoiser, topology, mu = gaussian10
    theirs, ours, chk = tmp_path / f"walk{ext}", tmp_path / f"jumps{ext}", tmp_path / "walk.chk"
    openmm_reporter = app.DCDReporter if ext == ".dcd" else app.XTCReporter

    def run(append, steps, checkpoint_at=None):
        simulation, _ = make_walk(denoiser, topology, mu, seed=3)
        if append:
            if restart == "checkpoint":
                simulation.loadCheckpoint(str(chk))
            else:
                simulation.currentStep = 20
        reporters = [openmm_reporter(str(theirs), 5, append=append), oj.JumpReporter(str(ours), 5, append=append)]
        simulation.reporters += reporters
        simulation.step(steps - 10 if checkpoint_at else steps)
        if checkpoint_at:
            simulation.saveCheckpoint(str(chk))
            simulation.step(10)  # frames after the checkpoint: dropped on restart
        reporters[1].close()
        if ext == ".dcd":
            reporters[0]._out.close()  # DCDReporter closes its file only when collected
        return simulation.integrator.getStepSize().value_in_unit(unit.picosecond)

    dt = run(False, 30 if restart == "checkpoint" else 20, checkpoint_at=20 if restart == "checkpoint" else None)
    assert dt == pytest.approx(0.04)
    if restart == "checkpoint":
        for path in (theirs, ours):
            truncate_trajectory(path, 4)
    run(True, 20)

    steps = list(range(5, 45, 5))
    times = [round(step * dt, 4) for step in steps]
    if ext == ".dcd":
        their_head, their_fields = dcd_header(theirs)
        our_head, our_fields = dcd_header(ours)
        assert our_fields == their_fields == dict(frames=8, first=5, interval=5, last=40, dt_ps=0.04)
        assert our_head == their_head
        top = mdtraj.Topology.from_openmm(topology)
        y, x = mdtraj.load(str(theirs), top=top).xyz, mdtraj.load(str(ours), top=top).xyz
        atol = 1e-5
    else:
        y, their_steps, their_times = xtc_steps_times(theirs)
        x, our_steps, our_times = xtc_steps_times(ours)
        assert our_steps == their_steps == steps
        assert our_times == their_times == times
        atol = 2e-3
    # and each jump frame is the denoised walk frame of the same step
    assert x.shape == y.shape == (8, 10, 3)
    np.testing.assert_allclose(x, mu._value + S**2 / (S**2 + SIGMA**2) * (y - mu._value), atol=atol)


@pytest.mark.parametrize("ext", [".h5", ".pdb"])
def test_h5_times_and_pdb_models_continue_after_cut_and_append(gaussian10, tmp_path, ext):
    denoiser, topology, mu = gaussian10
    path, top = tmp_path / f"jumps{ext}", tmp_path / "top.pdb"
    with open(top, "w") as handle:
        app.PDBFile.writeFile(topology, mu, handle)
    for append, steps in ((False, 30), (True, 20)):
        simulation, _ = make_walk(denoiser, topology, mu, seed=3)
        simulation.currentStep = 20 if append else 0
        reporter = oj.JumpReporter(str(path), 5, append=append)
        simulation.reporters.append(reporter)
        simulation.step(steps)
        reporter.close()
        if not append:
            truncate_trajectory(path, 4)
    traj = mdtraj.load(str(path)) if ext == ".h5" else mdtraj.load(str(path), top=str(top))
    assert traj.n_frames == 8
    if ext == ".h5":  # the times XTCFile would write: step k·interval, k·interval·dt ps
        np.testing.assert_allclose(traj.time, 0.2 * np.arange(1, 9), atol=1e-6)
    else:
        models = [line.split()[1] for line in path.read_text().splitlines() if line.startswith("MODEL")]
        assert models == [str(k) for k in range(1, 9)]


@pytest.mark.parametrize("ext", [".dcd", ".xtc", ".pdb", ".h5"])
def test_existing_file_is_replaced_at_construction_like_openmm(gaussian10, tmp_path, ext):
    denoiser, topology, mu = gaussian10
    # what OpenMM's own reporters do with an existing file and append=False: empty it at construction
    for name, reporter in (("x.dcd", app.DCDReporter), ("x.xtc", app.XTCReporter)):
        (tmp_path / name).write_bytes(b"old contents")
        made = reporter(str(tmp_path / name), 5)
        assert (tmp_path / name).stat().st_size == 0
        del made
    path = tmp_path / f"jumps{ext}"
    path.write_bytes(b"old contents")
    with pytest.raises(ValueError, match="reportInterval"):
        oj.JumpReporter(str(path), 0)
    assert path.read_bytes() == b"old contents"  # a reporter that cannot be made touches nothing
    reporter = oj.JumpReporter(str(path), 5)
    assert path.stat().st_size == 0
    # stopped before its first frame, then continued with append=True: starts the file afresh
    simulation, _ = make_walk(denoiser, topology, mu)
    reporter = oj.JumpReporter(str(path), 5, append=True)
    simulation.reporters.append(reporter)
    simulation.step(20)
    reporter.close()
    traj = mdtraj.load(str(path)) if ext == ".h5" else mdtraj.load(str(path), top=mdtraj.Topology.from_openmm(topology))
    assert traj.n_frames == 4
    # and an existing trajectory is replaced at construction, then written whole
    simulation, _ = make_walk(denoiser, topology, mu)
    reporter = oj.JumpReporter(str(path), 5)
    assert path.stat().st_size == 0
    simulation.reporters.append(reporter)
    simulation.step(30)
    reporter.close()
    traj = mdtraj.load(str(path)) if ext == ".h5" else mdtraj.load(str(path), top=mdtraj.Topology.from_openmm(topology))
    assert traj.n_frames == 6
    simulation.step(10)  # reporting after close() continues the file
    reporter.close()
    traj = mdtraj.load(str(path)) if ext == ".h5" else mdtraj.load(str(path), top=mdtraj.Topology.from_openmm(topology))
    assert traj.n_frames == 8


def test_jump_reporter_writes_relaxed_all_atom_frames_and_leaves_the_walk_alone(tmp_path):
    """relax=True: each reported step's K chains relaxed together, all atoms, topology beside them;
    reporting does not move the walk."""
    import mdtraj

    from openmm_jamun.data.build import build_peptide
    from openmm_jamun.model.featurize import featurize
    from openmm_jamun.model.gaussian import gaussian_denoiser
    from openmm_jamun.simulation import create_walk_simulation

    topology, positions = build_peptide("AA")
    mu = positions.value_in_unit(unit.nanometer)[featurize(topology).atom_indices]
    simulation = create_walk_simulation("AA", model=gaussian_denoiser(np.concatenate([mu, mu]), s=0.02, sigma=0.04),
                                        chains=2, seed=3)
    reporter = oj.JumpReporter(str(tmp_path / "relaxed.dcd"), 5, relax=True)
    plain = oj.JumpReporter(str(tmp_path / "jumps.dcd"), 5)
    simulation.reporters += [plain, reporter]
    simulation.step(10)
    state = simulation.context.getState(getPositions=True)
    before = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).copy()
    reporter.report(simulation, state)  # a third frame, by hand: the walk must not move
    after = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_array_equal(before, after)
    reporter.close()
    plain.close()

    relaxed = mdtraj.load(str(tmp_path / "relaxed.dcd"), top=str(tmp_path / "relaxed_topology.pdb"))
    jumps = mdtraj.load(str(tmp_path / "jumps.dcd"), top=mdtraj.Topology.from_openmm(simulation.topology))
    assert relaxed.n_frames == 3 and relaxed.n_chains == 2 and relaxed.n_atoms == 2 * 32  # 17 H per chain
    heavy = relaxed.atom_slice(relaxed.topology.select("not element H"))
    shift = np.sqrt(((heavy.xyz[:2] - jumps.xyz) ** 2).sum(-1).mean())
    assert 0 < shift < 0.05  # the jumps, relaxed: heavy atoms moved well under 0.5 Å RMS
    assert reporter.relaxation["frames"] == 6 and reporter.relaxation["valid"] == 6
    assert reporter.relaxation["not_relaxed"] == []
    with pytest.raises(ValueError, match="pass relax=True"):
        oj.JumpReporter(str(tmp_path / "x.dcd"), 5, topologyFile=str(tmp_path / "x.pdb"))
    with pytest.raises(TypeError, match="relax must be"):
        oj.JumpReporter(str(tmp_path / "x.dcd"), 5, relax="yes")
