"""JamunForce / JamunPythonForce: forces, serialization, metadata, bad input."""

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

import openmm_jamun as oj
from conftest import BACKENDS, make_walk, positions_nm

SIGMA, S = 0.04, 0.05


def _forces(system, positions, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    state = context.getState(getForces=True, getEnergy=True)
    return state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer), state


@pytest.mark.parametrize("backend", BACKENDS)
def test_force_is_kT_times_score_and_energy_is_zero(gaussian10, backend):
    denoiser, topology, mu = gaussian10
    noised = oj.create_noised_system(topology, mu, denoiser, seed=0)
    force = oj.make_jamun_force(denoiser, backend=backend, temperature=350 * unit.kelvin)
    noised.system.addForce(force)
    forces, state = _forces(noised.system, noised.positions)
    y = noised.positions.value_in_unit(unit.nanometer)
    xhat = mu._value + S**2 / (S**2 + SIGMA**2) * (y - mu._value)
    kT = (unit.MOLAR_GAS_CONSTANT_R * 350 * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    np.testing.assert_allclose(forces, kT * (xhat - y) / SIGMA**2, rtol=1e-5, atol=1e-3)
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == 0.0
    assert force.sigma == SIGMA * unit.nanometer and force.num_atoms == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_system_round_trips_through_xml(gaussian10, backend):
    denoiser, topology, mu = gaussian10
    noised = oj.create_noised_system(topology, mu, denoiser, seed=0)
    noised.system.addForce(oj.make_jamun_force(denoiser, backend=backend))
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(noised.system))
    before, _ = _forces(noised.system, noised.positions)
    after, _ = _forces(copy, noised.positions)
    np.testing.assert_array_equal(before, after)
    assert np.abs(before).max() > 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_jump_reporter_finds_denoiser_in_deserialized_system(gaussian10, backend, tmp_path):
    denoiser, topology, mu = gaussian10
    noised = oj.create_noised_system(topology, mu, denoiser, seed=0)
    noised.system.addForce(oj.make_jamun_force(denoiser, backend=backend))
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(noised.system))
    simulation = app.Simulation(noised.topology, system, oj.JamunIntegrator())
    simulation.context.setPositions(noised.positions)
    reporter = oj.JumpReporter(str(tmp_path / "x.pdb"), 1)
    simulation.reporters.append(reporter)
    simulation.step(2)
    reporter.close()
    assert reporter.frames_written == 2
    assert open(tmp_path / "x.pdb").read().count("MODEL") == 2


def test_any_minimal_contract_module_is_accepted():
    class Shrink(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sigma = 0.04
            self.num_atoms = 4

        def forward(self, positions: torch.Tensor) -> torch.Tensor:
            return 0.5 * positions

    force = oj.JamunPythonForce(torch.jit.script(Shrink()))
    system = openmm.System()
    for _ in range(4):
        system.addParticle(2.494)
    system.addForce(force)
    y = np.arange(12.0).reshape(4, 3) * 0.1
    forces, _ = _forces(system, y)
    kT = force.kT.value_in_unit(unit.kilojoule_per_mole)
    expected = kT * (-0.5 * y) / 0.04**2
    norms = np.linalg.norm(expected / kT, axis=1, keepdims=True)
    expected = expected * np.minimum(1.0, 100.0 / norms)  # the default clip at 100 / nm
    np.testing.assert_allclose(forces, expected, rtol=1e-5)


# --- bad input -----------------------------------------------------------------------------------------

def test_module_without_contract_is_refused(tmp_path):
    class NotADenoiser(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(NotADenoiser()), str(path))
    for backend in BACKENDS:
        with pytest.raises(oj.DenoiserContractError, match="missing attribute.*'sigma'.*'num_atoms'"):
            oj.make_jamun_force(str(path), backend=backend)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a model")
    with pytest.raises(oj.DenoiserContractError, match="not a TorchScript file"):
        oj.JamunForce(str(garbage))
    with pytest.raises(FileNotFoundError):
        oj.JamunForce(str(tmp_path / "missing.pt"))


def test_sigma_mismatch_is_an_error(gaussian10):
    denoiser = gaussian10[0]
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="sigma mismatch"):
            oj.make_jamun_force(denoiser, backend=backend, sigma=0.05 * unit.nanometer)
    # the same σ in other units is fine
    oj.JamunForce(denoiser, sigma=0.4 * unit.angstrom)


def test_units_are_checked():
    with pytest.raises(TypeError, match="temperature"):
        oj.JamunIntegrator(temperature=300 * unit.nanometer)
    with pytest.raises(TypeError, match="sigma"):
        oj.JamunIntegrator(sigma=0.04 * unit.picosecond)
    with pytest.raises(TypeError, match="timestep"):
        oj.JamunIntegrator(timestep=1 * unit.kelvin)
    with pytest.raises(ValueError, match="temperature"):
        oj.JamunIntegrator(temperature=-1)
    with pytest.raises(TypeError, match="mass"):
        oj.JamunIntegrator(mass=1 * unit.amu)
    # a collision rate is converted with the timestep (δ = σ = 0.04 ps): 25/ps is γ = 1 per step
    assert oj.JamunIntegrator(friction_per_step=25 / unit.picosecond).friction_per_step == pytest.approx(1.0)
    with pytest.raises(TypeError, match="friction_per_step"):
        oj.JamunIntegrator(friction_per_step=1 * unit.nanometer)


@pytest.mark.parametrize("backend", BACKENDS)
def test_force_and_integrator_at_other_temperatures_are_refused(gaussian10, backend, tmp_path):
    """F = kT_force·s with noise at kT_integrator samples p_Y^(T_force/T_integrator): JumpReporter
    refuses to write such a walk's frames (found in a round-tripped System too)."""
    denoiser, topology, mu = gaussian10
    hot = oj.JamunIntegrator(temperature=600 * unit.kelvin, sigma=SIGMA)
    simulation, _ = make_walk(denoiser, topology, mu, backend=backend, integrator=hot)
    simulation.reporters.append(oj.JumpReporter(str(tmp_path / "x.dcd"), 2))
    with pytest.raises(ValueError, match=r"force's temperature \(300.00 K\) is not the integrator's \(600.00 K\)"):
        simulation.step(2)
    from openmm_jamun.force import check_walk_temperature

    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(simulation.system))
    check_walk_temperature(system, oj.JamunIntegrator(sigma=SIGMA))  # 300 K both: no error
    with pytest.raises(ValueError, match="p_Y"):
        check_walk_temperature(system, hot)


def test_positions_in_the_wrong_unit_are_refused():
    """Å given as plain numbers (OpenMM reads nm) make bonds 10x too long: an error, not a walk."""
    from openmm_jamun.data.build import build_peptide

    topology, positions = build_peptide("A", minimize=False)
    angstrom_numbers = positions.value_in_unit(unit.angstrom)
    with pytest.raises(ValueError, match="look like Å"):
        oj.create_noised_system(topology, angstrom_numbers, sigma=0.04)
    with pytest.raises(TypeError, match="mass"):
        oj.create_noised_system(topology, positions, sigma=0.04, mass=2.5 * unit.amu, heavy_atoms_only=False)
    noised = oj.create_noised_system(topology, positions.in_units_of(unit.angstrom), sigma=0.04, heavy_atoms_only=False)
    assert noised.system.getNumParticles() == topology.getNumAtoms()


def test_denoiser_for_another_atom_count(gaussian10, gaussian30, tmp_path):
    denoiser = gaussian10[0]
    _, topology30, mu30 = gaussian30
    with pytest.raises(ValueError, match="denoiser is for 10 atoms"):
        oj.create_noised_system(topology30, mu30, denoiser)
    with pytest.raises(oj.DenoiserContractError, match="30"):
        reporter = oj.JumpReporter(str(tmp_path / "x.dcd"), 1, denoiser=denoiser)
        simulation, _ = make_walk(gaussian30[0], topology30, mu30)
        simulation.reporters.append(reporter)
        simulation.step(1)
    assert (tmp_path / "x.dcd").stat().st_size == 0  # created at construction, as OpenMM's reporters do; no frame
    # a System whose particle count differs from the denoiser's fails in the force with a clear message
    system = openmm.System()
    for _ in range(7):
        system.addParticle(1.0)
    system.addForce(oj.JamunForce(denoiser))
    with pytest.raises(openmm.OpenMMException, match="7 particles but the denoiser is for 10 atoms"):
        _forces(system, np.zeros((7, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_positions_stop_the_walk_naming_the_step(gaussian10, backend, tmp_path):
    denoiser, topology, mu = gaussian10
    simulation, _ = make_walk(denoiser, topology, mu, backend)
    walk_path, jump_path = tmp_path / "walk.dcd", tmp_path / "jump.dcd"
    simulation.reporters += [app.DCDReporter(str(walk_path), 5), oj.JumpReporter(str(jump_path), 5)]
    simulation.step(10)
    y = positions_nm(simulation)
    y[3, 1] = np.nan
    simulation.context.setPositions(y)
    with pytest.raises(oj.NonFiniteWalkError, match="at integrator step 11"):
        simulation.step(10)
    simulation.reporters[-1].close()
    import mdtraj

    jumps = mdtraj.load(str(jump_path), top=mdtraj.Topology.from_openmm(topology))
    assert jumps.n_frames == 2 and np.isfinite(jumps.xyz).all()


def test_nan_input_positions_are_refused(gaussian10):
    denoiser, topology, mu = gaussian10
    bad = mu.value_in_unit(unit.nanometer).copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        oj.create_noised_system(topology, bad, denoiser)


def test_hydrogens_are_dropped_with_a_message(tmp_path):
    from openmm_jamun.data.build import build_peptide

    topology, positions = build_peptide("A", minimize=False)
    with pytest.warns(UserWarning, match="dropping 12 hydrogen"):
        noised = oj.create_noised_system(topology, positions, sigma=0.04 * unit.nanometer)
    assert noised.system.getNumParticles() == 10
    assert all(atom.element.symbol != "H" for atom in noised.topology.atoms())
    assert noised.topology.getNumBonds() == 9


def test_the_messages_the_force_raises_are_the_ones_errors_classifies():
    """TorchScript needs literal strings in a raise; errors.walk_error recognises them by these constants."""
    import inspect

    from openmm_jamun import force
    from openmm_jamun.errors import NONFINITE_OUTPUT, NONFINITE_POSITIONS, walk_error

    source = inspect.getsource(force)
    assert f'"{NONFINITE_POSITIONS}"' in source and source.count(f'"{NONFINITE_OUTPUT}"') >= 2
    assert "denoiser output" in str(walk_error(RuntimeError(NONFINITE_OUTPUT), 3))
    assert walk_error(RuntimeError("something else"), 3) is None
