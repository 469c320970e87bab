"""Restrained all-atom relaxation of heavy-atom frames (openmm_jamun.relax)."""

from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
from openmm import app, unit

from openmm_jamun.analysis.ensemble import d_amino_acids
from openmm_jamun.analysis.torsions import torsions
from openmm_jamun.analysis.validity import CLASH_SCALE, ValidityChecker, _dihedrals
from openmm_jamun.data.build import build_peptide, forcefield
from openmm_jamun.relax import Relaxer, replicate_topology
from openmm_jamun.system import heavy_atom_indices, subset_topology

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def aa():
    """ACE-ALA-ALA-NME: all-atom topology and positions, and its heavy-atom topology and clean frame."""
    topology, positions = build_peptide("AA")
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    heavy = heavy_atom_indices(topology)
    return topology, xyz, subset_topology(topology, heavy), xyz[heavy]


@pytest.fixture(scope="module")
def relaxer(aa):
    _, _, heavy_topology, heavy_xyz = aa
    return Relaxer(heavy_topology, heavy_xyz, batch_size=8)


def rotate_about(xyz, axis_from, axis_to, moving, degrees):
    """``xyz`` with atoms ``moving`` turned rigidly about the bond axis_from→axis_to."""
    out = xyz.copy()
    axis = (xyz[axis_to] - xyz[axis_from]) / np.linalg.norm(xyz[axis_to] - xyz[axis_from])
    angle = np.deg2rad(degrees)
    v = xyz[moving] - xyz[axis_to]
    out[moving] = xyz[axis_to] + (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
                                  + axis * (v @ axis)[:, None] * (1 - np.cos(angle)))
    return out


def noised(heavy_xyz, count, scale=0.01, seed=0):
    return heavy_xyz[None] + np.random.default_rng(seed).normal(0.0, scale, (count,) + heavy_xyz.shape)


def heavy_index(topology):
    return {(a.residue.index, a.name): k for k, a in enumerate(topology.atoms())}


def test_stretched_bond_and_clash_relax_to_valid(aa, relaxer):
    _, _, heavy_topology, heavy_xyz = aa
    index = heavy_index(heavy_topology)
    checker = ValidityChecker(heavy_topology, heavy_xyz)
    frame = heavy_xyz.copy()
    # stretch ALA2's CA-CB bond by 0.5 Å
    ca, cb = index[(1, "CA")], index[(1, "CB")]
    frame[cb] += 0.05 * (frame[cb] - frame[ca]) / np.linalg.norm(frame[cb] - frame[ca])
    # and turn ψ and φ of ALA2 (rigidly, about CA-C and N-CA: bonds, chirality and ω kept) into a clash
    psi_moving = [k for k, a in enumerate(heavy_topology.atoms())
                  if a.residue.index >= 2 or (a.residue.index, a.name) == (1, "O")]
    phi_moving = [k for k, a in enumerate(heavy_topology.atoms())
                  if a.residue.index >= 2 or (a.residue.index == 1 and a.name not in ("N", "CA"))]
    turned = [rotate_about(rotate_about(frame, index[(1, "CA")], index[(1, "C")], psi_moving, psi),
                           index[(1, "N")], index[(1, "CA")], phi_moving, phi)
              for psi in range(0, 360, 10) for phi in range(0, 360, 10)]
    frame = turned[int(np.argmin(checker(np.stack(turned))["min_contact_ratio"]))]  # the worst clash
    before = checker(frame)
    assert not before["bonds"][0] and not before["clashes"][0] and before["min_contact_ratio"][0] < CLASH_SCALE
    result = relaxer.relax(frame[None])
    assert result.valid.all(), result.reasons
    assert result.reasons == [None]
    # the repair is local: most heavy atoms stay close to where they were
    moved = np.linalg.norm(result.positions[0, relaxer.heavy_atom_indices] - frame, axis=-1)
    assert np.median(moved) < 0.03


def test_mirrored_frame_stays_d_and_is_reported(aa, relaxer):
    _, _, heavy_topology, heavy_xyz = aa
    mirrored = heavy_xyz * np.array([-1.0, 1.0, 1.0])
    result = relaxer.relax(mirrored[None])
    assert not result.valid[0] and result.reasons == ["chirality"]
    d, labels = d_amino_acids(result.positions, result.topology)
    assert d.all() and labels == ["ALA2", "ALA3"]  # both centres still D: reported, not repaired
    validity = result.validity
    assert validity["bonds"][0] and validity["clashes"][0] and validity["peptide_bonds"][0]
    # the hydrogens are the D ones: each HA sits opposite its CB across the N-CA-C plane, as in L
    atoms = {(a.residue.index, a.name): a.index for a in result.topology.atoms()}
    x = result.positions[0]
    for r in (1, 2):
        n, ca, c, cb, ha = (x[atoms[(r, name)]] for name in ("N", "CA", "C", "CB", "HA"))
        normal = np.cross(n - ca, c - ca)
        assert np.sign((cb - ca) @ normal) == -np.sign((ha - ca) @ normal)
    assert result.rms_shift_nm[0] < 0.02
    # placed before any minimisation, each HA is the exact mirror image of the template's
    placed = relaxer.place_hydrogens(mirrored[None])[0]
    for r in (1, 2):
        np.testing.assert_allclose(placed[atoms[(r, "HA")]],
                                   relaxer._template_xyz[atoms[(r, "HA")]] * np.array([-1.0, 1.0, 1.0]), atol=1e-9)


def push_cb_through_plane(heavy_xyz, index, residue, past_planar):
    """``heavy_xyz`` with ``residue``'s CB moved through its N-CA-C plane to ``past_planar`` times its
    clean height on the other side (0 < past_planar < 1: a blurred centre on the D side)."""
    frame = heavy_xyz.copy()
    n, ca, c, cb = (frame[index[(residue, name)]] for name in ("N", "CA", "C", "CB"))
    normal = np.cross(n - ca, c - ca) / np.linalg.norm(np.cross(n - ca, c - ca))
    frame[index[(residue, "CB")]] = cb - (1 + past_planar) * ((cb - ca) @ normal) * normal
    return frame


@pytest.mark.parametrize("sequence", ["AA", "LA"])
def test_a_nearly_planar_d_side_centre_is_finished_l_and_counted(sequence):
    """Residue 1's CB pushed through the N-CA-C plane: a few degrees past planar (a blurred L centre,
    as the jumps have them) is finished L, with its HA opposite the CB, its side chain's bonds whole,
    and counted, also from all-atom input and with a Relaxer built on such a frame; as far as a
    mirrored centre, it stays D and is reported."""
    topology, positions = build_peptide(sequence)
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    heavy = heavy_atom_indices(topology)
    heavy_topology, heavy_xyz = subset_topology(topology, heavy), xyz[heavy]
    index = heavy_index(heavy_topology)
    frames = np.array([push_cb_through_plane(heavy_xyz, index, 1, f) for f in (0.25, 0.9)])
    quartet = np.array([[index[(1, name)] for name in ("CA", "N", "C", "CB")]])
    improper = np.degrees(_dihedrals(frames, quartet))[:, 0]
    assert -17.0 < improper[0] < -3.0 and improper[1] < -25.0
    relaxer = Relaxer(heavy_topology, frames[0], batch_size=8)  # built on the blurred frame itself
    result = relaxer.relax(frames)
    d, labels = d_amino_acids(result.positions, result.topology)
    assert len(labels) == 2 and labels[0].endswith("2")
    assert result.valid[0] and not d[0].any() and result.planar_centres_finished.tolist() == [1, 0]
    assert d[1].tolist() == [True, False] and result.reasons[1] == "chirality"
    atoms = {(a.residue.index, a.name): a.index for a in result.topology.atoms()}
    n, ca, c, cb, ha = (result.positions[0, atoms[(1, name)]] for name in ("N", "CA", "C", "CB", "HA"))
    normal = np.cross(n - ca, c - ca)
    assert np.sign((cb - ca) @ normal) == -np.sign((ha - ca) @ normal)
    assert result.rms_shift_nm[0] < 0.03  # a turn of the CA, not a rebuilt residue
    # all-atom input (the hydrogens of the clean structure, the CB pushed as above): the same
    all_atom = xyz.copy()
    all_atom[heavy] = frames[0]
    all_atom_relaxer = Relaxer(topology, xyz, batch_size=8)
    again = all_atom_relaxer.relax(all_atom[None])
    assert again.valid[0] and again.planar_centres_finished.tolist() == [1]
    assert not d_amino_acids(again.positions, again.topology)[0].any()


def test_safeguard_releases_restraints_that_hold_a_frame_invalid(aa):
    """Restraints stiff enough to hold a stretched bond: only releasing them (AlphaFold's second round) repairs it."""
    _, _, heavy_topology, heavy_xyz = aa
    index = heavy_index(heavy_topology)
    frame = heavy_xyz.copy()
    ca, cb = index[(1, "CA")], index[(1, "CB")]
    frame[cb] += 0.05 * (frame[cb] - frame[ca]) / np.linalg.norm(frame[cb] - frame[ca])
    stiff = 1e6 * unit.kilojoule_per_mole / unit.nanometer**2
    held = Relaxer(heavy_topology, heavy_xyz, restraint_k=stiff, release_rounds=0).relax(frame[None])
    assert held.reasons == ["bonds"] and held.released_atoms[0] == 0
    released = Relaxer(heavy_topology, heavy_xyz, restraint_k=stiff).relax(frame[None])
    assert released.valid[0], released.reasons
    assert released.released_atoms[0] >= 2  # CA and CB at least; the other restraints stay
    assert released.released_atoms[0] < len(heavy_xyz)


def test_a_bent_trans_peptide_bond_is_planarised_and_a_cis_one_is_reported(aa):
    """ω of ALA2-ALA3 turned 40° off trans (a blurred amide plane) and held by stiff restraints: the
    safeguard releases its plane and it relaxes to trans. Turned 160° (cis) it stays cis, reported."""
    from openmm_jamun.analysis.validity import _dihedrals

    _, _, heavy_topology, heavy_xyz = aa
    index = heavy_index(heavy_topology)
    moving = [k for k, a in enumerate(heavy_topology.atoms()) if a.residue.index >= 2 and a.name != "N"]
    stiff = 1e6 * unit.kilojoule_per_mole / unit.nanometer**2
    quad = np.array([[index[(1, "CA")], index[(1, "C")], index[(2, "N")], index[(2, "CA")]]])
    for turn in (40, 160):
        frame = rotate_about(heavy_xyz, index[(1, "C")], index[(2, "N")], moving, turn)
        held = Relaxer(heavy_topology, heavy_xyz, restraint_k=stiff, release_rounds=0).relax(frame[None])
        assert not held.validity["peptide_bonds"][0], turn  # the restraints alone hold ω where it was
        result = Relaxer(heavy_topology, heavy_xyz, restraint_k=stiff).relax(frame[None])
        omega = abs(np.degrees(_dihedrals(result.positions[:, result.heavy_atom_indices], quad)[0, 0]))
        if turn == 40:
            assert result.valid[0] and omega > 150, (result.reasons, omega)
        else:
            assert not result.validity["peptide_bonds"][0] and omega < 90, (result.reasons, omega)


def test_relaxed_frames_load_with_mdtraj_and_openmm_and_carry_the_right_hydrogens(aa, relaxer, tmp_path):
    topology, _, _, heavy_xyz = aa
    result = relaxer.relax(noised(heavy_xyz, 3))
    assert result.valid.all()
    traj_path, pdb_path = tmp_path / "relaxed.dcd", tmp_path / "relaxed.pdb"
    result.save(str(traj_path), str(pdb_path))
    loaded = mdtraj.load(str(traj_path), top=str(pdb_path))
    assert loaded.n_frames == 3 and loaded.n_atoms == topology.getNumAtoms()
    np.testing.assert_allclose(loaded.xyz, result.positions, atol=2e-5)  # DCD stores float32 Å
    expected = [(a.residue.name, a.name) for a in topology.atoms()]  # Modeller's hydrogens, amber14 names
    assert [(a.residue.name, a.name) for a in loaded.topology.atoms] == expected
    pdb = app.PDBFile(str(pdb_path))
    system = forcefield().createSystem(pdb.topology)  # amber14 templates every residue: the right hydrogens
    assert system.getNumParticles() == topology.getNumAtoms()
    assert sum(a.element.symbol == "H" for a in pdb.topology.atoms()) == 17


def test_batched_and_one_by_one_agree_and_runs_are_deterministic(aa):
    _, _, heavy_topology, heavy_xyz = aa
    frames = noised(heavy_xyz, 6, seed=1)
    # 5 kJ/mol/nm: 10x below the default, well above the ~1-2 kJ/mol/nm where single-precision forces
    # of copies placed nanometres apart stop L-BFGS
    one_by_one = Relaxer(heavy_topology, heavy_xyz, batch_size=1, tolerance=5.0).relax(frames)
    batched_relaxer = Relaxer(heavy_topology, heavy_xyz, batch_size=6, tolerance=5.0)
    batched = batched_relaxer.relax(frames)
    again = batched_relaxer.relax(frames)
    np.testing.assert_array_equal(batched.positions, again.positions)
    assert batched.valid.tolist() == one_by_one.valid.tolist()
    assert (batched.rms_force < 5.0).all() and (one_by_one.rms_force < 5.0).all()  # every copy converged
    difference = np.linalg.norm(batched.positions - one_by_one.positions, axis=-1)
    heavy = batched_relaxer.heavy_atom_indices
    assert difference[:, heavy].max() < 0.006  # nm: two L-BFGS runs to one tolerance, nothing more
    assert np.sqrt(np.mean(difference**2)) < 0.01


def test_every_frame_of_a_batch_converges_to_the_tolerance(aa, relaxer):
    """OpenMM's criterion is the RMS force of the whole batch: seven calm frames would let an eighth stop
    far above the tolerance. Each copy must get there."""
    _, _, _, heavy_xyz = aa
    calm = relaxer.relax(heavy_xyz[None]).positions[0, relaxer.heavy_atom_indices]
    frames = np.repeat(calm[None], 8, axis=0)
    frames[3] = noised(heavy_xyz, 1, scale=0.02, seed=7)[0]
    result = relaxer.relax(frames)
    assert (result.rms_force < relaxer.tolerance).all(), result.rms_force


@pytest.mark.parametrize("implicit", [None, "gbn2"])
def test_copies_in_a_batch_feel_exactly_the_forces_of_the_molecule_alone(aa, implicit):
    topology, xyz, _, _ = aa
    relaxer = Relaxer(topology, xyz, implicit=implicit)
    frames = xyz[None] + np.random.default_rng(2).normal(0.0, 0.01, (3,) + xyz.shape)
    reference = openmm.Platform.getPlatformByName("Reference")
    alone = openmm.Context(relaxer._create_system(topology, app.NoCutoff, None), openmm.VerletIntegrator(0.001),
                           reference)
    batch = relaxer._create_system(replicate_topology(topology, 3), app.CutoffNonPeriodic, relaxer.cutoff_nm)
    *_, offsets = relaxer._context(3)
    together = openmm.Context(batch, openmm.VerletIntegrator(0.001), reference)
    together.setPositions((frames + offsets[:, None]).reshape(-1, 3))
    forces = together.getState(getForces=True).getForces(asNumpy=True)._value.reshape(3, -1, 3)
    for k in range(3):
        alone.setPositions(frames[k])
        np.testing.assert_allclose(forces[k], alone.getState(getForces=True).getForces(asNumpy=True)._value,
                                   atol=1e-6, rtol=0)


def test_non_finite_frame_is_kept_and_marked(aa, relaxer):
    _, _, _, heavy_xyz = aa
    frames = noised(heavy_xyz, 3, seed=3)
    frames[1, 4, 2] = np.nan
    result = relaxer.relax(frames)
    assert result.positions.shape == (3, relaxer.n_atoms, 3)
    assert result.valid.tolist() == [True, False, True]
    assert result.reasons[1] == "non-finite input" and np.isnan(result.positions[1]).all()
    assert np.isfinite(result.positions[[0, 2]]).all()


def test_a_frame_that_cannot_be_minimised_is_marked_not_dropped(aa, relaxer):
    _, _, _, heavy_xyz = aa
    frames = noised(heavy_xyz, 2, seed=4)
    frames[0, 0] = frames[0, 12]  # two heavy atoms six bonds apart on the same spot
    result = relaxer.relax(frames)
    assert len(result.reasons) == 2 and result.valid[1] and np.isfinite(result.positions[1]).all()
    assert not result.valid[0] and result.reasons[0].startswith("minimisation failed")
    assert np.isnan(result.positions[0]).all()  # not half-written


def test_untemplatable_residue_is_a_clear_error(aa):
    _, _, heavy_topology, heavy_xyz = aa
    broken = subset_topology(heavy_topology, range(heavy_topology.getNumAtoms()))
    list(broken.residues())[1].name = "XYZ"
    with pytest.raises(ValueError, match="template"):
        Relaxer(broken, heavy_xyz)


def test_bad_arguments_are_clear_errors(aa, relaxer):
    _, _, heavy_topology, heavy_xyz = aa
    two_chains = subset_topology(heavy_topology, range(heavy_topology.getNumAtoms()), num_copies=2)
    with pytest.raises(ValueError, match="chains"):
        Relaxer(two_chains, np.concatenate([heavy_xyz, heavy_xyz]))
    with pytest.raises(TypeError, match="restraint_k"):
        Relaxer(heavy_topology, heavy_xyz, restraint_k=10 * unit.nanometer)
    with pytest.raises(ValueError, match="implicit"):
        Relaxer(heavy_topology, heavy_xyz, implicit="tip3p")
    with pytest.raises(ValueError, match="15 heavy atoms"):
        relaxer.relax(np.zeros((1, 14, 3)))


def test_hydrogens_are_carried_from_the_template_exactly(aa, relaxer):
    _, _, _, heavy_xyz = aa
    placed = relaxer.place_hydrogens(heavy_xyz[None])[0]
    np.testing.assert_allclose(placed, relaxer._template_xyz, atol=1e-12)
    # and move rigidly with the molecule
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    moved = relaxer.place_hydrogens((heavy_xyz @ rotation.T + 1.0)[None])[0]
    np.testing.assert_allclose(moved, relaxer._template_xyz @ rotation.T + 1.0, atol=1e-12)


def test_restraints_keep_the_heavy_atoms_close(aa, relaxer):
    _, _, _, heavy_xyz = aa
    result = relaxer.relax(noised(heavy_xyz, 4, scale=0.01, seed=5))
    assert result.valid.all()
    assert (result.rms_shift_nm < 0.02).all() and (result.rms_shift_nm > 0).all()
    assert (result.rms_force < relaxer.tolerance).all()


def test_torsion_restraints_keep_the_jumps_torsions(aa):
    """Repairing bonds and angles must not move φ/ψ: with the default torsion restraints a noised
    frame's torsions move at most 60% as far as with position restraints alone (about 45% here)."""
    _, _, heavy_topology, heavy_xyz = aa
    frames = noised(heavy_xyz, 8, scale=0.02, seed=2)
    topology = mdtraj.Topology.from_openmm(heavy_topology)
    before = torsions(mdtraj.Trajectory(frames, topology))
    change = {}
    for k_t in (None, 0.0):
        kwargs = {} if k_t is None else {"torsion_restraint_k": k_t * unit.kilojoule_per_mole / unit.radian**2}
        result = Relaxer(heavy_topology, heavy_xyz, batch_size=8, **kwargs).relax(frames)
        assert result.valid.all()
        after = torsions(mdtraj.Trajectory(result.positions[:, result.heavy_atom_indices], topology))
        difference = np.stack([np.angle(np.exp(1j * (after[name] - before[name]))) for name in before])
        change[k_t] = np.degrees(np.abs(difference))
    assert set(before) == {"phi:1", "phi:2", "psi:1", "psi:2"}
    assert change[None].mean() < 0.6 * change[0.0].mean()
    assert change[None].max() < 25.0


def test_a_nearly_planar_centre_keeps_the_hand_of_its_jump():
    """A QW jump of the default model's walk whose GLN CA is blurred nearly flat (float32 nm, with
    the run's first frame as the hydrogen template): amber14 alone finishes that centre as D; the
    one-sided improper restraint keeps the jump's L. (Whether the unheld centre tips over depends
    on the last bits of the forces, so only the held result is asserted.)"""
    topology = mdtraj.load_topology(str(DATA / "qw_heavy_topology.pdb"))
    frames = np.load(DATA / "qw_jump_nearly_planar_ca.npz")
    jump = frames["jump"][None].astype(np.float64)
    assert not d_amino_acids(jump, topology)[0].any()
    relaxer = Relaxer(topology, frames["template"], batch_size=1)
    result = relaxer.relax(jump)
    assert result.valid.all()
    assert not d_amino_acids(result.positions[:, relaxer.heavy_atom_indices], topology)[0].any()


def test_a_trans_peptide_bond_of_the_jump_stays_trans():
    """An AA jump with every ω within 15° of trans whose NME bond amber14 turned over once the safeguard
    had released that amide (to 78° in a batch, -16° alone): the side restraint keeps it trans."""
    topology = mdtraj.load_topology(str(DATA / "aa_heavy_topology.pdb"))
    frames = np.load(DATA / "aa_jump_trans.npz")
    jump = frames["jump"][None].astype(np.float64)
    relaxer = Relaxer(topology, frames["template"], batch_size=1)
    assert (np.abs(np.degrees(_dihedrals(jump, ValidityChecker(topology, jump[0]).omega_quads))) > 165).all()
    result = relaxer.relax(jump)
    assert result.valid.all()
    assert (np.abs(np.degrees(_dihedrals(result.positions, relaxer.checker.omega_quads))) > 150).all()
