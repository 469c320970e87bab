"""The walk in OpenMM is JAMUN's reference BAOAB update, step for step (docs/design.md)."""

import numpy as np
import pytest
from openmm import unit

import openmm_jamun as oj
from conftest import BACKENDS, PLATFORMS, make_walk, positions_nm

SIGMA, S = 0.04, 0.05


def reference_walk(y, v, mu, steps, delta=SIGMA, gamma=0.0, M=1.0, clip=100.0):
    """The five steps of docs/design.md in JAMUN units, float64, no randomness (γ = 0)."""
    shrink = S**2 / (S**2 + SIGMA**2)

    def score(y):
        s = (mu + shrink * (y - mu) - y) / SIGMA**2
        norm = np.linalg.norm(s, axis=-1, keepdims=True)
        return s * np.minimum(1.0, clip / norm)

    for _ in range(steps):
        v = v + 0.5 * delta * score(y) / M
        y = y + 0.5 * delta * v
        v = np.exp(-gamma) * v
        y = y + 0.5 * delta * v
        v = v + 0.5 * delta * score(y) / M
    return y, v


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_frictionless_walk_matches_numpy(gaussian10, backend, platform):
    denoiser, topology, mu = gaussian10
    integrator = oj.JamunIntegrator(friction_per_step=0.0)
    simulation, noised = make_walk(denoiser, topology, mu, backend, platform, seed=3, integrator=integrator)
    y0 = noised.positions.value_in_unit(unit.nanometer)
    v0 = noised.velocities.value_in_unit(unit.nanometer / unit.picosecond)
    simulation.step(100)
    y_ref, v_ref = reference_walk(y0, v0, mu.value_in_unit(unit.nanometer), 100)
    y = positions_nm(simulation)
    v = simulation.context.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    # float32 denoiser: agreement to float32 precision on coordinates of order 1 nm.
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=2e-3 * np.abs(v_ref).max())
    # and the walk really moved (the comparison is not trivially true)
    assert np.abs(y - y0).max() > 1e-2


def test_clipping_is_per_atom_norm(gaussian10):
    denoiser, topology, mu = gaussian10
    simulation, noised = make_walk(denoiser, topology, mu, score_clip=5 / unit.nanometer)
    y = positions_nm(simulation)
    forces = simulation.context.getState(getForces=True).getForces(asNumpy=True)._value
    kT = oj.JamunIntegrator().kT.value_in_unit(unit.kilojoule_per_mole)
    norms = np.linalg.norm(forces / kT, axis=1)
    raw = np.linalg.norm((mu._value + S**2 / (S**2 + SIGMA**2) * (y - mu._value) - y) / SIGMA**2, axis=1)
    np.testing.assert_allclose(norms, np.minimum(raw, 5.0), rtol=1e-4)
    assert (raw > 5.0).any()


def test_integrator_maps_jamun_defaults_to_openmm_units():
    integrator = oj.JamunIntegrator(temperature=300 * unit.kelvin, sigma=0.04 * unit.nanometer)
    assert integrator.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.04)
    assert integrator.collision_rate.value_in_unit(unit.picosecond**-1) == pytest.approx(25.0)
    kT = integrator.kT.value_in_unit(unit.kilojoule_per_mole)
    assert kT == pytest.approx(2.494, abs=1e-3)
    assert integrator.particle_mass.value_in_unit(unit.amu) == pytest.approx(kT)
    # plain numbers are OpenMM units (K, nm, ps), as in OpenMM's own integrators
    assert oj.JamunIntegrator(300, 0.04).getStepSize() == integrator.getStepSize()
    # a length timestep is JAMUN's δ; a time is OpenMM's Δt
    assert oj.JamunIntegrator(timestep=0.02 * unit.nanometer).getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.02)
    assert oj.JamunIntegrator(timestep=20 * unit.femtosecond).getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.02)


def test_noised_system_masses_and_initial_state(gaussian30):
    denoiser, topology, mu = gaussian30
    noised = oj.create_noised_system(topology, mu, denoiser, seed=0, mass=2.0)
    kT = 2.494342
    masses = [noised.system.getParticleMass(i).value_in_unit(unit.amu) for i in range(noised.system.getNumParticles())]
    np.testing.assert_allclose(masses, 2.0 * kT, rtol=1e-5)
    assert noised.system.getNumForces() == 0
    eps = (noised.positions - noised.clean_positions).value_in_unit(unit.nanometer)
    assert np.std(eps) == pytest.approx(0.04, rel=0.15)
    v = noised.velocities.value_in_unit(unit.nanometer / unit.picosecond)
    assert np.var(v) == pytest.approx(1 / 2.0, rel=0.25)  # N(0, kT/m) = N(0, 1/M)
