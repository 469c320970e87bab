"""Well-tempered metadynamics with one bias grid shared by the walkers of a walk."""

import warnings

import numpy as np
import openmm
import pytest
from openmm import unit

import openmm_jamun as oj
from conftest import make_walk, positions_nm
from openmm_jamun.inputs import read_input
from openmm_jamun.metadynamics import (ANGLE_SWITCH, SharedBiasMetadynamics, WalkerVariable, parse_torsions,
                                       torsion_quartets, torsion_variables)

SIGMA = 0.04
SEPARATION = 0.4  # nm between the modes: a barrier of about 8 kT at 0.05 nm mode widths


def mixture_walk(walkers, seed, timestep=1.0):
    """A walk on independent two-mode atoms (mode weights 0.7/0.3); atom k is walker k."""
    denoiser, topology, x0, info = oj.mixture_example(walkers, separation=SEPARATION, widths=(0.03, 0.03),
                                                      weights=(0.7, 0.3))
    integrator = oj.JamunIntegrator(sigma=SIGMA, timestep=timestep * SIGMA * unit.picosecond)
    integrator.setRandomNumberSeed(seed + 1)
    simulation, _ = make_walk(denoiser, topology, x0, backend="torch", platform="Reference", seed=seed,
                              integrator=integrator)
    return simulation, info


def x_variable(origin, width=0.04, margin=0.3):
    """Walker k's CV: atom k's x relative to its first mode."""
    def force_for(k):
        force = openmm.CustomExternalForce("x - x0")
        force.addPerParticleParameter("x0")
        force.addParticle(k, [float(origin[k])])
        return force
    return WalkerVariable(force_for, -margin, SEPARATION + margin, width, name="x")


def first_mode(simulation, info):
    return positions_nm(simulation)[:, 0] - info["origin_x"] < info["threshold"]


def test_shared_bias_recovers_the_mixture_population():
    """32 walkers, 6000 steps: the reweighted population of the 0.7 mode is exact within 0.03
    (measured 0.685 and 0.690 at seeds 1 and 2), the biased walk's own population is not (≈ 0.54),
    and the plain walk (test below) does not leave the mode it starts in."""
    walkers, steps, every = 32, 6000, 10
    simulation, info = mixture_walk(walkers, seed=1)
    metad = SharedBiasMetadynamics([x_variable(info["origin_x"])], walkers, bias_factor=4, height=1.0,
                                   deposit_interval=20, record_interval=every).add_to(simulation)
    first = []
    for _ in range(steps // every):
        simulation.step(every)
        first.append(first_mode(simulation, info))
    first = np.array(first)
    weights = metad.weights()
    assert weights.shape == first.shape and metad.deposits == steps // 20
    reweighted = float((weights * first).sum())
    assert abs(reweighted - info["p_first"]) < 0.03, (reweighted, info["p_first"])
    assert abs(first.mean() - info["p_first"]) > 0.1  # the bias moved the walk: reweighting is needed


@pytest.mark.slow
def test_the_plain_walk_needs_more_than_five_times_the_steps():
    """5 × 6000 steps of the plain walk leave its population further from exact than 0.03."""
    walkers, steps = 32, 30000
    simulation, info = mixture_walk(walkers, seed=1)
    first = []
    for _ in range(steps // 10):
        simulation.step(10)
        first.append(first_mode(simulation, info))
    assert abs(np.mean(first) - info["p_first"]) > 0.03, np.mean(first)


def test_checkpoint_and_bias_file_continue_the_same_walk(tmp_path):
    def build():
        simulation, info = mixture_walk(3, seed=5)
        metad = SharedBiasMetadynamics([x_variable(info["origin_x"])], 3, bias_factor=5, height=2.0,
                                       deposit_interval=10, record_interval=5).add_to(simulation)
        return simulation, metad

    first, metad = build()
    first.step(100)
    metad.save(tmp_path / "bias.npz")
    checkpoint = first.context.createCheckpoint()
    first.step(100)

    second, restored = build()
    restored.load(tmp_path / "bias.npz")
    second.context.loadCheckpoint(checkpoint)
    assert restored.deposits == 10 and len(restored.frame_bias) == 20
    second.step(100)
    assert second.currentStep == first.currentStep == 200
    assert restored.deposits == metad.deposits == 20 and metad.bias_grid.max() > 0
    np.testing.assert_array_equal(restored.bias_grid, metad.bias_grid)
    np.testing.assert_array_equal(positions_nm(second), positions_nm(first))
    np.testing.assert_array_equal(restored.weights(), metad.weights())

    with pytest.raises(ValueError, match="height"):
        SharedBiasMetadynamics([x_variable([0.0, 2.0, 4.0])], 3, bias_factor=5, height=1.0).load(tmp_path / "bias.npz")


def test_both_walkers_deposit_into_one_grid():
    """Two walkers in different modes: one deposition puts a Gaussian of the full height at each."""
    simulation, info = mixture_walk(2, seed=0)
    y = positions_nm(simulation)
    y[1, 0] = info["origin_x"][1] + SEPARATION  # walker 1 in the second mode
    simulation.context.setPositions(y)
    metad = SharedBiasMetadynamics([x_variable(info["origin_x"], width=0.03)], 2, bias_factor=5, height=1.5,
                                   deposit_interval=1).add_to(simulation)
    simulation.step(1)
    cvs = metad.collective_variables(simulation.context)
    assert metad.deposits == 1
    grid = metad.bias_grid
    peaks = [i for i in range(1, len(grid) - 1) if grid[i] > grid[i - 1] and grid[i] >= grid[i + 1]]
    assert len(peaks) == 2
    axis = np.linspace(-0.3, SEPARATION + 0.3, len(grid))
    spacing = axis[1] - axis[0]
    for peak, s in zip(peaks, sorted(cvs[:, 0])):
        assert abs(axis[peak] - s) <= spacing and grid[peak] == pytest.approx(1.5, abs=0.02)


def test_bias_at_is_the_force_energy_in_the_context():
    simulation, info = mixture_walk(3, seed=2)
    metad = SharedBiasMetadynamics([x_variable(info["origin_x"])], 3, bias_factor=5, height=2.0,
                                   deposit_interval=7).add_to(simulation)
    simulation.step(200)
    y = positions_nm(simulation)
    energy = simulation.context.getState(getEnergy=True, groups={metad.force_group}).getPotentialEnergy()
    per_walker = metad.bias_at(y)
    assert per_walker.shape == (3,) and per_walker.max() > 0.5
    assert per_walker.sum() == pytest.approx(energy.value_in_unit(unit.kilojoule_per_mole), rel=1e-9, abs=1e-9)


def _dipeptide_system(sequence, chains):
    """A walk topology of a capped dipeptide (heavy atoms, ``chains`` copies) and a System of it with
    no JAMUN force."""
    topology, positions, _ = read_input(sequence)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dropping .* hydrogen")
        noised = oj.create_noised_system(topology, positions, sigma=SIGMA * unit.nanometer, chains=chains,
                                          seed=0)
    return noised


def test_torsion_bias_uses_the_analysis_torsions_and_its_energy():
    import mdtraj

    from openmm_jamun.analysis.torsions import torsions

    noised = _dipeptide_system("AA", 2)
    n = noised.topology.getNumAtoms() // 2
    quartets = torsion_quartets(noised.topology, "phi:1,psi:2")
    traj = mdtraj.Trajectory(noised.positions.value_in_unit(unit.nanometer)[None, :n].astype(np.float32),
                             mdtraj.Topology.from_openmm(noised.topology).subset(range(n)))
    angles = torsions(traj)
    np.testing.assert_allclose(mdtraj.compute_dihedrals(traj, quartets)[0], [angles["phi:1"][0], angles["psi:2"][0]],
                               atol=1e-6)

    metad = SharedBiasMetadynamics.for_torsions(noised.topology, "phi:1,psi:1", width=0.5, grid_points=30,
                                                temperature=300, height=3.0)
    metad.bias_grid[:] = np.random.default_rng(0).uniform(0, 5, metad.bias_grid.shape)
    metad.bias_grid[-1, :] = metad.bias_grid[0, :]
    metad.bias_grid[:, -1] = metad.bias_grid[:, 0]
    metad._set_table(metad._table)
    system = noised.system
    metad.force.setForceGroup(3)
    system.addForce(metad.force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    y = noised.positions.value_in_unit(unit.nanometer)
    context.setPositions(y)
    energy = context.getState(getEnergy=True, groups={3}).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert metad.bias_at(y).sum() == pytest.approx(energy, rel=1e-9)
    cvs = metad.collective_variables(context)
    chain1 = mdtraj.Trajectory(y[None, n:].astype(np.float32), traj.topology)
    phi_psi = mdtraj.compute_dihedrals(chain1, torsion_quartets(noised.topology, "phi:1,psi:1"))[0]
    np.testing.assert_allclose(cvs[1], phi_psi, atol=1e-5)  # walker 1's CVs are chain 1's torsions
    # chain 1's quartet is chain 0's shifted by n atoms
    assert metad.force.getCollectiveVariable(2).getTorsionParameters(0)[:4] == [int(i) + n for i in quartets[0]]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="phi, psi, chi1, chi2, chi3, chi4, chi5"):
        parse_torsions("omega:1")
    with pytest.raises(ValueError, match="1 to 3 variables"):
        parse_torsions("phi:1,psi:1,phi:2,psi:2")
    with pytest.raises(ValueError, match="residue index"):
        parse_torsions("phi")
    topology = _dipeptide_system("AG", 1).topology
    with pytest.raises(ValueError, match="no torsion phi:0"):
        torsion_quartets(topology, "phi:0")
    with pytest.raises(ValueError, match="no torsion chi1:2"):
        torsion_quartets(topology, "phi:1,chi1:2")  # Gly has no side chain
    with pytest.raises(ValueError, match="bias_factor must be > 1"):
        SharedBiasMetadynamics.for_torsions(topology, "phi:1", bias_factor=1.0)
    variable = torsion_variables(topology, "phi:1")[0]
    with pytest.raises(ValueError, match="1 to 3 variables"):
        SharedBiasMetadynamics([variable] * 4, 1)


def test_a_direct_denoiser_warns_once_and_an_energy_model_does_not(gaussian10):
    denoiser, topology, mu = gaussian10
    simulation, _ = make_walk(denoiser, topology, mu, platform="Reference")
    variable = x_variable(np.zeros(10))
    with pytest.warns(UserWarning, match="approximate"):
        SharedBiasMetadynamics([variable], 2, bias_factor=5).add_to(simulation)
    simulation, info = mixture_walk(2, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SharedBiasMetadynamics([x_variable(info["origin_x"])], 2, bias_factor=5).add_to(simulation)
    assert not [w for w in caught if "approximate" in str(w.message)]


def test_c_of_t_is_the_uniform_part_of_the_bias_and_enters_the_weights():
    """A bias uniform in s is a constant: c(t) equals it, and frames with equal V(s) but a larger
    c(t) weigh less by exp(−Δc/kT)."""
    from openmm_jamun.metadynamics import reweighting_weights

    metad = SharedBiasMetadynamics([x_variable([0.0])], 1, bias_factor=4, temperature=300)
    metad.bias_grid[:] = 3.0
    assert metad.c_of_t() == pytest.approx(3.0, rel=1e-12)
    metad.bias_grid[: len(metad.bias_grid) // 2] = 0.0
    assert 0.0 < metad.c_of_t() < 3.0
    kT = 300 * 0.00831446261815324
    w = reweighting_weights([[5.0], [5.0]], [0.0, 2.0], 300)
    assert w[0, 0] / w[1, 0] == pytest.approx(np.exp(2.0 / kT)) and w.sum() == pytest.approx(1.0)


def test_a_deposit_refreshes_the_metropolis_walks_cached_energy():
    """The Metropolis walk caches the energy at its current positions; a deposit changes the bias
    there without moving them, so the next proposal must not be judged against the old energy."""
    denoiser, topology, x0, info = oj.mixture_example(2, separation=SEPARATION, widths=(0.03, 0.03),
                                                      weights=(0.7, 0.3))
    integrator = oj.JamunIntegrator(sigma=SIGMA, metropolis=True)
    simulation, _ = make_walk(denoiser, topology, x0, backend="torch", platform="Reference", seed=3,
                              integrator=integrator)
    SharedBiasMetadynamics([x_variable(info["origin_x"])], 2, bias_factor=4, height=1.0,
                           deposit_interval=5).add_to(simulation)
    simulation.step(4)
    assert integrator.getGlobalVariableByName("cached") == 1
    simulation.step(1)  # the deposit, at the end of step 5
    assert integrator.getGlobalVariableByName("cached") == 0
    simulation.step(1)
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert integrator.getGlobalVariableByName("Ecur") == pytest.approx(energy, rel=1e-6, abs=1e-6)


def _torsion_bias_forces(y, angle_switch):
    """Per-atom norms of a φ(1) bias force (kJ/mol/nm) on a one-chain AA walk at positions ``y``, and
    the bias there, with a bias grid of slope up to 5 kJ/mol/rad."""
    noised = _dipeptide_system("AA", 1)
    metad = SharedBiasMetadynamics.for_torsions(noised.topology, "phi:1", width=0.5, grid_points=40,
                                                temperature=300, angle_switch=angle_switch)
    axis = np.linspace(-np.pi, np.pi, len(metad.bias_grid))
    metad.bias_grid[:] = 5.0 * (1.0 + np.sin(axis))
    metad._set_table(metad._table)
    system = noised.system
    metad.force.setForceGroup(3)
    system.addForce(metad.force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(y)
    state = context.getState(getForces=True, getEnergy=True, groups={3})
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return np.linalg.norm(forces, axis=1), metad.bias_at(y)[0], state.getPotentialEnergy()


def test_the_torsion_bias_force_stays_bounded_at_a_straight_bond_angle():
    """In noised coordinates a bond angle of a biased torsion can be nearly straight, where the
    torsion's gradient grows as 1/sin θ: the bond-angle switch keeps the bias force at the size it
    has at a clean geometry, where it leaves the bias unchanged to 0.2%."""
    noised = _dipeptide_system("AA", 1)
    y = noised.clean_positions.value_in_unit(unit.nanometer).copy()
    n_, ca, c = (torsion_quartets(noised.topology, "phi:1")[0][1:])
    ordinary, bias_switched, _ = _torsion_bias_forces(y, ANGLE_SWITCH)
    ordinary_plain, bias_plain, _ = _torsion_bias_forces(y, 0.0)
    assert bias_switched == pytest.approx(bias_plain, rel=2e-3) and bias_plain > 0.3
    # C of residue 1 moved onto the line N-CA, 0.1° off straight, at its bond length
    u = (y[ca] - y[n_]) / np.linalg.norm(y[ca] - y[n_])
    side = np.cross(u, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    y[c] = y[ca] + 0.152 * (np.cos(np.radians(0.1)) * u + np.sin(np.radians(0.1)) * side)
    straight_plain, _, _ = _torsion_bias_forces(y, 0.0)
    straight, bias, energy = _torsion_bias_forces(y, ANGLE_SWITCH)
    assert straight_plain.max() > 50 * ordinary_plain.max()  # the singularity the switch removes
    assert straight.max() < 3 * ordinary.max()
    assert bias == pytest.approx(energy.value_in_unit(unit.kilojoule_per_mole), rel=1e-9, abs=1e-9)


def _one_chain_metad(y, angle_switch=ANGLE_SWITCH):
    """A φ(1) bias on a one-chain AA walk at positions ``y`` (no JAMUN force), V = 2 kJ/mol everywhere,
    recording and depositing at every step; and its Simulation."""
    from openmm import app

    noised = _dipeptide_system("AA", 1)
    metad = SharedBiasMetadynamics.for_torsions(noised.topology, "phi:1", temperature=300, height=1.0,
                                                bias_factor=4, deposit_interval=1, record_interval=1,
                                                angle_switch=angle_switch)
    metad.bias_grid[:] = 2.0
    metad._set_table(metad._table)
    simulation = app.Simulation(noised.topology, noised.system, openmm.VerletIntegrator(0.001),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(y)
    metad.add_to(simulation)
    return metad, simulation


def test_a_walker_records_the_bias_it_felt_and_deposits_in_proportion():
    """The weights' record is V·S, the bias the walker felt, and its deposit is h·S·exp(−V/kΔT): a
    walker whose bond angle is straight (S ≈ 0) feels and deposits almost nothing."""
    noised = _dipeptide_system("AA", 1)
    clean = noised.clean_positions.value_in_unit(unit.nanometer).copy()
    n_, ca, c = torsion_quartets(noised.topology, "phi:1")[0][1:]
    straight = clean.copy()
    straight[c] = clean[ca] + 0.152 * (clean[ca] - clean[n_]) / np.linalg.norm(clean[ca] - clean[n_])
    kT_delta = 3 * 300 * 0.00831446261815324  # k_B (γ − 1) T
    for y, felt in ((clean, 1.0), (straight, 0.0)):
        metad, simulation = _one_chain_metad(y)
        scale = float(metad.bias_scales(simulation.context)[0])
        assert scale == pytest.approx(felt, abs=2e-3)
        felt_bias = metad.bias_at(y)[0]
        metad.report(simulation, None)  # step 0: a record, then a deposit
        assert metad.frame_bias[0][0] == pytest.approx(2.0 * scale, abs=1e-9)
        assert metad.frame_bias[0][0] == pytest.approx(felt_bias, abs=1e-9)
        deposited = (metad.bias_grid - 2.0).max()
        assert deposited == pytest.approx(scale * np.exp(-2.0 / kT_delta), rel=0.02, abs=2e-3)
        assert metad.weights().shape == (1, 1)


def test_a_bias_file_from_before_the_switch_resumes_only_without_it(tmp_path):
    """A format-1 bias file (no scale settings) continues a bias without the switch, the bias it
    was made with; with the switch on, loading it is an error that names the switch."""
    noised = _dipeptide_system("AA", 1)
    old = SharedBiasMetadynamics.for_torsions(noised.topology, "phi:1", temperature=300, angle_switch=0.0)
    old.bias_grid[:] = 1.5
    old.save(tmp_path / "bias.npz")
    with np.load(tmp_path / "bias.npz") as data:
        kept = {key: data[key] for key in data.files if key != "scale_settings"}
    kept["version"] = np.asarray(1)
    with open(tmp_path / "old.npz", "wb") as handle:
        np.savez(handle, **kept)
    again = SharedBiasMetadynamics.for_torsions(noised.topology, "phi:1", temperature=300, angle_switch=0.0)
    assert np.all(again.load(tmp_path / "old.npz").bias_grid == 1.5)
    switched = SharedBiasMetadynamics.for_torsions(noised.topology, "phi:1", temperature=300)
    with pytest.raises(ValueError, match="bond-angle switch"):
        switched.load(tmp_path / "old.npz")
