"""JumpReporter: formats, OpenMM's reporter protocol, restarts, cost."""

import mdtraj
import numpy as np
import pytest
from openmm import app, unit

import openmm_jamun as oj
from openmm_jamun import force as force_module
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
