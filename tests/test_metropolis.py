"""The Metropolis-exact walk (JamunIntegrator(metropolis=True)) on the analytic Gaussian mixture."""

import io

import numpy as np
import pytest
import torch
from openmm import unit

import openmm_jamun as oj
from conftest import make_walk, positions_nm
from openmm_jamun.force import ScoreComputation

SIGMA = 0.04


def mode_population(num_atoms, metropolis, steps, seed, step_factor=1.9, burn=500, every=5, **force_kwargs):
    """Fraction of (atom, frame) samples of the walk in the first mode, its exact value, and the
    acceptance rate. Modes: a point mass and a 0.08 nm wide Gaussian 0.16 nm apart, noised at σ."""
    denoiser, topology, x0, info = oj.mixture_example(num_atoms, separation=0.16, widths=(0.0, 0.08))
    integrator = oj.JamunIntegrator(sigma=SIGMA, timestep=step_factor * SIGMA * unit.nanometer,
                                    metropolis=metropolis)
    integrator.setRandomNumberSeed(seed + 1)
    simulation, _ = make_walk(denoiser, topology, x0, backend="torch", platform="Reference", seed=seed,
                              integrator=integrator, **force_kwargs)
    simulation.step(burn)
    integrator.reset_acceptance()
    first = []
    for _ in range(steps // every):
        simulation.step(every)
        x = positions_nm(simulation)[:, 0] - info["origin_x"]
        first.append(np.mean(x < info["threshold"]))
    return float(np.mean(first)), info["p_first"], integrator.acceptance_rate


def test_metropolis_walk_stays_exact_where_the_score_clip_acts():
    """The proposal's forces need not be −∇U: velocity Verlet is volume-preserving and reversible for
    any force of the positions, and acceptance is on the unclipped U. A clip of 20/nm acts on most of
    the mixture's noised points (its scores reach ≈ 75/nm), yet the populations stay exact."""
    denoiser, _, _, _ = oj.mixture_example(1, separation=0.16, widths=(0.0, 0.08))
    eps = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0))
    y = torch.cat([SIGMA * eps[:1000],  # noised points of the two modes
                   torch.tensor([0.16, 0.0, 0.0]) + (0.08**2 + SIGMA**2) ** 0.5 * eps[1000:]])
    clipped = float(((denoiser(y) - y) / SIGMA**2).norm(dim=-1).gt(20.0).float().mean())
    assert clipped > 0.5, clipped
    metropolis, exact, acceptance = mode_population(2, True, 24000, seed=3, score_clip=20 / unit.nanometer)
    assert acceptance > 0.1
    assert abs(metropolis - exact) < 0.03, (metropolis, exact)


@pytest.mark.parametrize("steps,tolerance", [(24000, 0.03), pytest.param(120000, 0.015, marks=pytest.mark.slow)])
def test_metropolis_walk_samples_mixture_modes_exactly_where_the_plain_walk_does_not(steps, tolerance):
    """At Δt = 1.9σ (the narrow mode's curvature 1/σ² puts it just inside BAOAB's stability limit) the
    plain walk puts ≈ 6.5% too little weight on the narrow mode; the Metropolis walk's populations are
    exact. Statistical error (standard deviation over seeds, measured with a NumPy twin of the
    integrator): ≈ 1% for the Metropolis walk at 24000 steps of 2 atoms, ≈ 0.5% for the plain walk."""
    metropolis, exact, acceptance = mode_population(2, True, steps, seed=1)
    plain, _, _ = mode_population(16, False, steps // 4, seed=2)
    assert 0.2 < acceptance < 0.6
    assert abs(metropolis - exact) < tolerance, (metropolis, exact)
    assert abs(plain - exact) > 0.045, (plain, exact)


def test_metropolis_with_a_direct_model_is_an_error(gaussian10):
    denoiser, topology, mu = gaussian10
    integrator = oj.JamunIntegrator(sigma=SIGMA, metropolis=True)
    simulation, noised = make_walk(denoiser, topology, mu, integrator=integrator)
    with pytest.raises(oj.MetropolisWithoutEnergyError, match="needs an energy-parametrised denoiser"):
        oj.check_walk(noised.system, integrator)  # from the System, before any step
    with pytest.raises(oj.MetropolisWithoutEnergyError, match="a direct denoiser's score is not the gradient"):
        simulation.step(5)  # and at the first step, for a walk built without the check
    oj.check_walk(noised.system, oj.JamunIntegrator(sigma=SIGMA))  # the plain walk is fine


def test_one_evaluation_per_step_and_the_cache_follows_set_positions():
    """Energy and forces at the current positions are cached: one model call per step (at the
    proposal), and positions set from outside are re-evaluated, so Ecur is always kT·E(x)."""
    denoiser, topology, x0, _ = oj.mixture_example(2)
    integrator = oj.JamunIntegrator(sigma=SIGMA, metropolis=True)
    simulation, noised = make_walk(denoiser, topology, x0, backend="python", platform="Reference",
                                   integrator=integrator)
    kT = integrator.kT.value_in_unit(unit.kilojoule_per_mole)
    calls = []
    original = ScoreComputation.__call__

    def counted(self, state):
        calls.append(1)
        return original(self, state)

    ScoreComputation.__call__ = counted
    try:
        simulation.step(1)
        calls.clear()
        simulation.step(50)
        assert len(calls) == 50
        rng = np.random.default_rng(0)
        for _ in range(3):
            moved = x0.value_in_unit(unit.nanometer) + 0.05 * rng.standard_normal((2, 3))
            simulation.context.setPositions(moved)
            simulation.step(1)
            x = torch.tensor(positions_nm(simulation), dtype=torch.float32)
            assert integrator.getGlobalVariableByName("Ecur") == pytest.approx(kT * float(denoiser.energy(x)),
                                                                               rel=1e-5)
            forces = np.asarray(integrator.current_forces())
            state = simulation.context.getState(getForces=True)
            np.testing.assert_allclose(forces, state.getForces(asNumpy=True)._value, rtol=1e-6, atol=1e-6)
    finally:
        ScoreComputation.__call__ = original
    assert integrator.n_trials == 54 and 0 < integrator.n_accept <= 54


def test_acceptance_is_reported_in_state_data():
    denoiser, topology, x0, _ = oj.mixture_example(2)
    integrator = oj.JamunIntegrator(sigma=SIGMA, metropolis=True)
    simulation, _ = make_walk(denoiser, topology, x0, integrator=integrator)
    out = io.StringIO()
    simulation.reporters.append(oj.AcceptanceStateDataReporter(out, 50, step=True, potentialEnergy=True))
    simulation.step(200)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith('"Acceptance Rate"') and len(lines) == 5
    rates = [float(line.split(",")[-1]) for line in lines[1:]]
    energies = [float(line.split(",")[1]) for line in lines[1:]]
    assert all(0.5 < r <= 1.0 for r in rates) and any(e != 0.0 for e in energies)
    assert integrator.acceptance_rate == pytest.approx(np.mean(rates))
    assert oj.JamunIntegrator(metropolis=False).acceptance_rate == 1.0


def test_jump_from_the_integrators_force_is_the_denoisers_jump():
    denoiser, topology, x0, _ = oj.mixture_example(3)
    for metropolis in (False, True):
        integrator = oj.JamunIntegrator(sigma=SIGMA, metropolis=metropolis)
        simulation, _ = make_walk(denoiser, topology, x0, integrator=integrator)
        assert integrator.current_forces() is None
        simulation.step(7)
        y = positions_nm(simulation)
        jump = oj.jump_from_forces(y, integrator.current_forces(), SIGMA, integrator.kT.value_in_unit(
            unit.kilojoule_per_mole))
        with torch.no_grad():
            np.testing.assert_allclose(jump, denoiser(torch.tensor(y, dtype=torch.float32)).numpy(), atol=1e-6)
