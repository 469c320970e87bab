"""Decorrelation times of pooled K-chain runs (jamun analyze)."""

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
    """One chain (reference MD): bit-for-bit the single-series estimate."""
    x = ar1_chains(np.random.default_rng(1), 1, 3000, tau=7.3)[0]
    centred = x - x.mean()
    var = (centred**2).mean()
    size = 1 << (2 * len(x) - 1).bit_length()
    spectrum = np.fft.rfft(centred, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[: len(x)] / (var * np.arange(len(x), 0, -1))
    expected = float(np.nonzero(acf[: len(x) // 3 + 1] < 1 / np.e)[0][0])
    assert decorrelation_time(x) == decorrelation_time(x, starts=[0]) == expected


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
