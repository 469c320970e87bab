"""The validity checker catches each failure kind on hand-made frames, and only that kind."""

import json

import numpy as np
import pytest
from openmm import unit

from openmm_jamun.analysis.validity import (
    BOND_TOLERANCE_NM, CHECKS, CLASH_SCALE, ValidityChecker, equilibrium_bonds, failure_reasons, frame_validity,
    validity_summary)
from openmm_jamun.data.build import build_peptide
from openmm_jamun.system import heavy_atom_indices, subset_topology


@pytest.fixture(scope="module")
def aa():
    """ACE-ALA-ALA-NME, all atoms (minimised), its checker and its atoms by (residue index, name)."""
    topology, positions = build_peptide("AA")
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    index = {(a.residue.index, a.name): a.index for a in topology.atoms()}
    return topology, xyz, ValidityChecker(topology), index


def rotate_about(xyz, axis_from, axis_to, moving, degrees):
    """``xyz`` with the atoms ``moving`` rotated rigidly about the axis axis_from→axis_to (a bond):
    every bond length and chirality is kept."""
    out = xyz.copy()
    axis = xyz[axis_to] - xyz[axis_from]
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    v = xyz[moving] - xyz[axis_to]
    rotated = (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
               + axis * (v @ axis)[:, None] * (1 - np.cos(angle)))
    out[moving] = xyz[axis_to] + rotated
    return out


def downstream(topology, first_residue: int, also=()):
    """Atoms of residues ≥ first_residue plus ``also``."""
    return np.array(sorted({a.index for a in topology.atoms() if a.residue.index >= first_residue} | set(also)))


def failing(validity, frame=0):
    return {check for check in CHECKS if not validity[check][frame]}


def test_built_peptide_is_valid_all_atom_and_heavy_atom(aa):
    topology, xyz, checker, _ = aa
    assert failing(checker(xyz)) == set()
    heavy = heavy_atom_indices(topology)
    heavy_validity = frame_validity(xyz[heavy], subset_topology(topology, heavy))
    assert heavy_validity["valid"].all()


def test_equilibrium_lengths_are_amber14s_and_the_same_for_heavy_and_all_atom_topologies(aa):
    topology, xyz, checker, index = aa
    r0 = dict(zip(map(tuple, checker.bonds.tolist()), checker.r0))
    assert r0[tuple(sorted((index[(1, "C")], index[(2, "N")])))] == pytest.approx(0.1335)  # amber C-N
    assert r0[tuple(sorted((index[(1, "CA")], index[(1, "C")])))] == pytest.approx(0.1522)  # amber CT-C
    heavy = heavy_atom_indices(topology)
    bonds, lengths = equilibrium_bonds(subset_topology(topology, heavy), xyz[heavy])
    all_atom = {(heavy[i], heavy[j]): r for (i, j), r in zip(bonds.tolist(), lengths)}
    assert len(all_atom) == 14
    assert all(r0[pair] == pytest.approx(r) for pair, r in all_atom.items())


def test_a_stretched_bond_fails_bonds_only(aa):
    topology, xyz, checker, index = aa
    n, c = index[(3, "N")], index[(3, "C")]  # NME's N-C(methyl) bond: pull the methyl (and its H) out
    direction = (xyz[c] - xyz[n]) / np.linalg.norm(xyz[c] - xyz[n])
    moved = [c] + [b.index for a, b in topology.bonds() if a.index == c and b.element.symbol == "H"] + \
        [a.index for a, b in topology.bonds() if b.index == c and a.element.symbol == "H"]
    assert len(moved) == 4
    for stretch, fails in ((0.8 * BOND_TOLERANCE_NM, set()), (1.2 * BOND_TOLERANCE_NM, {"bonds"})):
        frame = xyz.copy()
        frame[moved] += stretch * direction
        assert failing(checker(frame)) == fails, stretch


def test_a_clash_fails_clashes_only(aa):
    topology, xyz, checker, index = aa
    # turn ψ and φ of the first ALA (rigidly, about its CA-C and N-CA bonds) until a heavy-atom pair clashes
    psi_moving = downstream(topology, 2, also=[index[(1, "O")]])
    phi_moving = downstream(topology, 2, also=[a.index for a in topology.atoms()
                                                if a.residue.index == 1 and a.name not in ("N", "H", "CA")])
    for psi in range(0, 360, 10):
        turned = rotate_about(xyz, index[(1, "CA")], index[(1, "C")], psi_moving, psi)
        for phi in range(10, 360, 10):
            frame = rotate_about(turned, index[(1, "N")], index[(1, "CA")], phi_moving, phi)
            validity = checker(frame)
            if failing(validity) == {"clashes"}:
                break
        else:
            continue
        break
    else:
        pytest.fail("no φ/ψ rotation made a clash")
    assert failing(validity) == {"clashes"}
    assert validity["min_contact_ratio"][0] < CLASH_SCALE


def test_a_hydrogen_near_a_heavy_atom_is_not_a_clash(aa):
    """Only heavy-atom pairs count (hydrogens are placed by relaxation, not checked for contacts)."""
    topology, xyz, checker, index = aa
    heavy = heavy_atom_indices(topology)
    pairs = set(map(tuple, checker.clash_pairs.tolist()))
    assert all(i in heavy and j in heavy for i, j in pairs)
    assert (index[(0, "CH3")], index[(3, "C")]) in pairs  # the two methyls, many bonds apart


def test_a_mirrored_frame_fails_chirality_only(aa):
    _, xyz, checker, _ = aa
    mirrored = xyz * np.array([-1.0, 1.0, 1.0])
    validity = checker(mirrored)
    assert failing(validity) == {"chirality"}
    assert validity["d_centres"][0] == 2


def test_a_cis_peptide_bond_fails_peptide_bonds_and_x_pro_is_exempt(aa):
    topology, xyz, checker, index = aa
    cis = rotate_about(xyz, index[(1, "C")], index[(2, "N")], downstream(topology, 2, also=[]), 180.0)
    # the rotation moves N(3) onto the axis end and everything after it: ω(ALA2-ALA3) goes to ~0
    validity = checker(cis)
    assert "peptide_bonds" in failing(validity) and validity["bonds"][0] and validity["chirality"][0]

    pro_topology, pro_positions = build_peptide("AP")
    pro_xyz = np.asarray(pro_positions.value_in_unit(unit.nanometer))
    pro_index = {(a.residue.index, a.name): a.index for a in pro_topology.atoms()}
    pro_checker = ValidityChecker(pro_topology)
    assert "ALA2-PRO3" not in pro_checker.omega_labels and "ACE1-ALA2" in pro_checker.omega_labels
    pro_cis = rotate_about(pro_xyz, pro_index[(1, "C")], pro_index[(2, "N")],
                           downstream(pro_topology, 2), 180.0)
    assert pro_checker(pro_cis)["peptide_bonds"][0]  # cis X-Pro is not a failure


def test_cap_peptide_bonds_are_checked(aa):
    topology, xyz, checker, index = aa
    assert checker.omega_labels == ["ACE1-ALA2", "ALA2-ALA3", "ALA3-NME4"]
    # ACE's ω uses its methyl CH3, NME's its methyl C
    assert checker.omega_quads[0].tolist() == [index[(0, "CH3")], index[(0, "C")], index[(1, "N")], index[(1, "CA")]]
    assert checker.omega_quads[-1].tolist() == [index[(2, "CA")], index[(2, "C")], index[(3, "N")], index[(3, "C")]]
    cis_cap = rotate_about(xyz, index[(2, "C")], index[(3, "N")], downstream(topology, 3), 180.0)
    assert "peptide_bonds" in failing(checker(cis_cap))


def test_non_finite_frames_fail_every_check_and_say_so(aa):
    topology, xyz, checker, _ = aa
    frames = np.stack([xyz, xyz])
    frames[1, 3, 0] = np.nan
    validity = checker(frames)
    assert validity["valid"].tolist() == [True, False]
    assert failing(validity, 1) == set(CHECKS)
    assert failure_reasons(validity) == [None, "non-finite coordinates"]
    heavy = heavy_atom_indices(topology)
    only_nan = frame_validity(np.full((2, len(heavy), 3), np.nan), subset_topology(topology, heavy))
    assert not only_nan["valid"].any() and not only_nan["finite"].any()


def test_chains_of_one_topology_do_not_clash_with_each_other(aa):
    """A K-chain walk's topology holds K copies in the same place: that is not a clash."""
    topology, xyz, _, _ = aa
    heavy = heavy_atom_indices(topology)
    two_chains = subset_topology(topology, heavy, num_copies=2)
    validity = frame_validity(np.concatenate([xyz[heavy], xyz[heavy]])[None], two_chains)
    assert validity["valid"].all()


def test_summary_is_json_and_counts_each_failure(aa):
    topology, xyz, checker, index = aa
    mirrored = xyz * np.array([-1.0, 1.0, 1.0])
    validity = checker(np.stack([xyz, mirrored, mirrored, xyz]))
    summary = json.loads(json.dumps(validity_summary(validity)))
    assert summary["frames"] == 4 and summary["valid_fraction"] == 0.5
    assert summary["failing_fraction"] == {"bonds": 0.0, "clashes": 0.0, "chirality": 0.5, "peptide_bonds": 0.0}
    assert "Bondi" in summary["definition"]["vdw_radii_nm"]


def test_summary_counts_frames_that_fell_apart(aa):
    """A bond 1.5 Å off its length fell apart; 0.5 Å off is broken but has not; NaN frames fell apart too."""
    topology, xyz, checker, index = aa
    n, c = index[(3, "N")], index[(3, "C")]
    direction = (xyz[c] - xyz[n]) / np.linalg.norm(xyz[c] - xyz[n])
    frames = np.stack([xyz, xyz, xyz, xyz])
    frames[1, c] += 0.05 * direction
    frames[2, c] += 0.15 * direction
    frames[3, 0] = np.nan
    summary = validity_summary(checker(frames))
    assert summary["failing_fraction"]["bonds"] == 0.75
    assert summary["fell_apart_fraction"] == 0.5


def test_equilibrium_md_has_no_clashes():
    """The clash scale is calibrated so that the force field's own equilibrium is clash-free: every
    frame of the committed amber14/GBn2 reference of AA (10 ns) passes (at 0.9x Bondi, 3% fail)."""
    from pathlib import Path

    from openmm_jamun.data.md import load_md_frames

    reference = Path(__file__).resolve().parents[1] / "references" / "capped_2aa" / "AA"
    validity = frame_validity(load_md_frames(str(reference), heavy_atoms_only=False))
    assert len(validity["valid"]) == 10000 and validity["clashes"].all()
