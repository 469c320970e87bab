"""jamun analyze: decorrelation times of pooled K-chain runs; ensemble comparisons on a real difference."""

import mdtraj
import numpy as np
import pytest
from openmm import unit

from openmm_jamun.analysis.ensemble import decorrelation_time, torsion_decorrelation
from openmm_jamun.analysis.torsions import chain_starts, split_chains


def ar1_chains(rng, chains, frames, tau, offsets=None):
    """``chains`` stationary AR(1) series (autocorrelation exp(-lag/tau)), [chains, frames]."""
    phi = np.exp(-1 / tau)
    x = np.empty((chains, frames))
    x[:, 0] = rng.standard_normal(chains)
    noise = rng.standard_normal((chains, frames)) * np.sqrt(1 - phi**2)
    for t in range(1, frames):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x if offsets is None else x + offsets[:, None]


def test_decorrelation_within_chains_recovers_the_ar1_time():
    """1000 chains of 90 frames, autocorrelation exp(-lag/19.5): first lag below 1/e is 20. Pooled end
    to end, lags spanning two chains pair independent frames and the estimate drops to 16-17 (over
    seeds 0-7; within chains 19-21)."""
    x = ar1_chains(np.random.default_rng(0), 1000, 90, tau=19.5)
    starts = np.arange(0, x.size, 90)
    assert decorrelation_time(x.ravel(), starts=starts) == pytest.approx(20, abs=2)
    assert decorrelation_time(x.ravel(), max_lag=30) <= 17  # the old, concatenated estimate


def test_chains_stuck_at_different_means_are_not_decorrelated():
    """Chains that each decorrelate in ~6 frames around their own, different means have not mixed:
    reported as slow (inf within a third of a chain), not as the within-chain time (centring each chain on
    its own mean gives 5-6) nor as the concatenated estimate's chain-length artefact (144-178 frames)."""
    rng = np.random.default_rng(0)
    x = ar1_chains(rng, 100, 300, tau=5.5, offsets=2 * rng.standard_normal(100))
    assert decorrelation_time(x.ravel(), starts=np.arange(0, x.size, 300)) == float("inf")
    assert 100 < decorrelation_time(x.ravel()) < 300


def test_one_chain_is_unchanged():
    """One chain (reference MD): the AR(1) time, and the same figure with or without chain starts.
    exp(-lag/7.3) first drops below 1/e at lag 8; 3000 frames estimate it within a frame."""
    x = ar1_chains(np.random.default_rng(1), 1, 3000, tau=7.3)[0]
    assert decorrelation_time(x) == decorrelation_time(x, starts=[0])
    assert decorrelation_time(x) == pytest.approx(8, abs=1)


def test_split_chains_marks_chain_starts_for_torsion_decorrelation():
    """A 2-chain run pooled by split_chains: time restarts with the second chain, chain_starts finds it, and
    two identical chains give the decorrelation times of one (pooled end to end, phi:2 would drop from 17 to
    13 frames)."""
    from openmm_jamun.analysis.torsions import torsions
    from openmm_jamun.data.build import build_peptide

    topology, positions = build_peptide("AA")
    x0 = positions.value_in_unit(unit.nanometer)
    walk = ar1_chains(np.random.default_rng(0), x0.size, 90, tau=12.0).T.reshape(90, *x0.shape)  # every atom jitters
    single = mdtraj.Trajectory((x0 + 0.03 * walk).astype(np.float32), mdtraj.Topology.from_openmm(topology))
    single = single.atom_slice(single.topology.select("not element H"))
    two_chain = single.stack(single)
    assert two_chain.n_chains == 2
    pooled = split_chains(two_chain)
    assert pooled.n_frames == 180 and chain_starts(pooled).tolist() == [0, 90]
    assert chain_starts(single).tolist() == [0] and chain_starts(pooled[:90]).tolist() == [0]
    expected = torsion_decorrelation(single)
    assert set(expected) == {"phi:1", "phi:2", "psi:1", "psi:2"} and all(np.isfinite(list(expected.values())))
    assert torsion_decorrelation(pooled) == expected
    concatenated = {key: max(decorrelation_time(np.sin(a), max_lag=30), decorrelation_time(np.cos(a), max_lag=30))
                    for key, a in torsions(pooled).items()}
    assert concatenated != expected  # the old estimate: lags spanning the two chains


def test_a_mirrored_ensemble_is_far_and_outside_the_reference(md_root, tmp_path):
    """Samples = the reference's mirror image (every torsion's sign flipped): large torsion JSDs, most
    samples outside the reference's TICA clusters (an extra state, not silently some reference state),
    a half-vs-half floor, and analysis.json that strict JSON parsers accept."""
    import json

    from openmm_jamun.analysis.ensemble import compare_ensembles
    from openmm_jamun.analysis.report import _strict_json, load_heavy

    reference = load_heavy(str(md_root / "A"))
    mirrored = reference[:]
    mirrored.xyz = mirrored.xyz * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    result = compare_ensembles(mirrored, reference, lag=2, states=2)
    assert result["jsd_base"] == "e" and result["torsions"]["mean_backbone_1d"] > 0.5
    assert result["msm"]["sample_outside_fraction"] > 0.5 and result["msm"]["jsd_states"] > 0.5
    floor = result["reference_halves"]  # 10 frames against 10: a high floor, which is what it is for
    assert 0 < floor["mean_backbone_1d"] <= np.sqrt(np.log(2)) and 0 <= floor["jsd_tic0"] <= np.sqrt(np.log(2))
    assert json.loads(json.dumps(_strict_json({"tau": float("inf"), "x": np.float32(1.5)}), allow_nan=False)) == {
        "tau": None, "x": 1.5}
