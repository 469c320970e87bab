"""On Gaussian data the walk and the jumps have known moments (docs/design.md)."""

import mdtraj
import numpy as np
import pytest
from openmm import unit

import openmm_jamun as oj
from conftest import BACKENDS, PLATFORMS, make_walk

SIGMA, S = 0.04, 0.05
WALK_VAR = S**2 + SIGMA**2
JUMP_VAR = S**4 / (S**2 + SIGMA**2)


class _WalkRecorder:
    """Records the noisy walk's positions (positions only, like DCDReporter)."""

    def __init__(self, interval):
        self.interval, self.frames = interval, []

    def describeNextReport(self, simulation):
        return {"steps": self.interval - simulation.currentStep % self.interval, "periodic": False,
                "include": ["positions"]}

    def report(self, simulation, state):
        self.frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


@pytest.mark.parametrize("backend", BACKENDS)
def test_walk_and_jump_moments(gaussian30, backend, tmp_path):
    denoiser, topology, mu = gaussian30
    mu = mu.value_in_unit(unit.nanometer)
    simulation, _ = make_walk(denoiser, topology, mu, backend, PLATFORMS[-1], seed=11)
    simulation.step(200)  # burn-in: starts at x + σε, not at a draw of Y
    recorder = _WalkRecorder(5)
    jump_path = tmp_path / "jumps.dcd"
    simulation.reporters += [recorder, oj.JumpReporter(str(jump_path), 5)]
    simulation.step(12000)
    simulation.reporters[-1].close()

    walk = np.array(recorder.frames) - mu
    jumps = mdtraj.load(str(jump_path), top=mdtraj.Topology.from_openmm(topology)).xyz - mu
    assert len(jumps) == len(walk) == 2400
    # 2400 frames x 90 coordinates, correlation time ~1 frame: the relative
    # standard error of a variance is ~0.4%, so 3% is a sharp test.
    assert np.var(walk) == pytest.approx(WALK_VAR, rel=0.03)
    assert np.var(jumps) == pytest.approx(JUMP_VAR, rel=0.03)
    # means: every particle's mean is μ to within a few standard errors
    se = np.sqrt(WALK_VAR / len(walk)) * 2.0
    assert np.abs(walk.mean(axis=0)).max() < 5 * se
    assert np.sqrt((walk.mean(axis=0) ** 2).mean()) < 1.5 * se
