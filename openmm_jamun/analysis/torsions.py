"""Torsions (mdtraj) and Jensen-Shannon distances between torsion distributions.

Jensen-Shannon *distance* in base e, as the JAMUN paper reports it (its code calls scipy's
``jensenshannon`` without a base): 0 for identical histograms, √ln 2 ≈ 0.833 for histograms with
disjoint support. (A base-2 distance is this one / √ln 2: 1.20 times larger.)
Binning as in the JAMUN paper: 1-D, 100 bins over (−π, π]; φ/ψ 2-D, 50×50 bins.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import jensenshannon

#: mdtraj's torsion functions (compute_<kind>) whose torsions are analysed (and held by the relaxation)
TORSION_KINDS = ("phi", "psi", "chi1", "chi2", "chi3", "chi4", "chi5")
#: the base of every JS distance this package reports
JSD_BASE = np.e


def split_chains(traj):
    """One trajectory per chain of a K-chain walk, concatenated over chains (same topology).

    The pooled trajectory's ``time`` restarts with each chain (chain k's frames carry the walk's
    times), so :func:`chain_starts` finds the chains again: lag-based statistics (decorrelation
    times) must not pair the last frames of one chain with the first of the next."""
    import mdtraj

    chains = list(traj.topology.chains)
    if len(chains) <= 1:
        return traj
    parts = [traj.atom_slice([a.index for a in chain.atoms]) for chain in chains]
    first = parts[0]
    xyz = np.concatenate([p.xyz for p in parts])
    time = np.asarray(traj.time, dtype=np.float64)
    if len(time) > 1 and not (np.diff(time) > 0).all():  # times that would not mark the restarts
        time = np.arange(traj.n_frames, dtype=np.float64)
    return mdtraj.Trajectory(xyz, first.topology, time=np.tile(time, len(chains)))


def chain_starts(traj) -> np.ndarray:
    """First frame of each independent chain of ``traj``: 0, and every frame whose time is not later
    than its predecessor's (a K-chain run pooled by :func:`split_chains`; a single MD run: [0])."""
    time = np.asarray(traj.time, dtype=np.float64)
    return np.concatenate([[0], np.nonzero(np.diff(time) <= 0)[0] + 1]).astype(np.int64)


def torsions(traj) -> dict[str, np.ndarray]:
    """Backbone (φ, ψ) and side-chain (χ1-χ5) torsions, radians, keyed 'phi:2' (residue index)."""
    import mdtraj

    out = {}
    for kind in TORSION_KINDS:
        indices, angles = getattr(mdtraj, f"compute_{kind}")(traj)
        for column, quartet in enumerate(indices):
            out[torsion_name(kind, quartet, traj.topology)] = angles[:, column]
    return out


def torsion_name(kind: str, quartet, topology) -> str:
    """The key of one of mdtraj's torsion quartets, '<kind>:<residue index>': φ is named by its N's
    residue, ψ by its C's, χ by their first atom's. Metadynamics biases use the same names, so a
    'phi:1' means one torsion everywhere."""
    position = 0 if kind.startswith("chi") else (1 if kind == "phi" else 2)
    return f"{kind}:{topology.atom(int(quartet[position])).residue.index}"


def backbone_pairs(angles: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(φ, ψ) pairs of the residues that have both, [T, 2], keyed by residue index."""
    pairs = {}
    for key in angles:
        kind, residue = key.split(":")
        if kind == "phi" and f"psi:{residue}" in angles:
            pairs[residue] = np.stack([angles[key], angles[f"psi:{residue}"]], axis=1)
    return pairs


def _histogram_1d(x, bins, weights=None):
    return np.histogram(x, bins=bins, range=(-np.pi, np.pi), weights=weights)[0].astype(float)


def jsd_1d(a: np.ndarray, b: np.ndarray, bins: int = 100, weights_a=None) -> float:
    """JS distance (base e) of two angle samples on 100 bins over (−π, π]; ``weights_a``: per-sample
    weights of ``a`` (reweighted biased samples), default equal."""
    p, q = _histogram_1d(a, bins, weights_a), _histogram_1d(b, bins)
    return float(jensenshannon(p, q, base=JSD_BASE))


def jsd_2d(a: np.ndarray, b: np.ndarray, bins: int = 50, weights_a=None) -> float:
    """JS distance (base e) of two [T, 2] angle samples on 50×50 bins over (−π, π]² (``weights_a`` as
    :func:`jsd_1d`'s)."""
    edges = [np.linspace(-np.pi, np.pi, bins + 1)] * 2
    p = np.histogram2d(a[:, 0], a[:, 1], bins=edges, weights=weights_a)[0].ravel()
    q = np.histogram2d(b[:, 0], b[:, 1], bins=edges)[0].ravel()
    return float(jensenshannon(p, q, base=JSD_BASE))


def torsion_jsds(samples, reference, sample_weights=None) -> dict:
    """All torsion JSDs of two trajectories of the same molecule: 1-D per torsion, 2-D per φ/ψ pair.
    ``sample_weights`` [frames of samples]: weights of reweighted (biased) samples."""
    a, b = torsions(samples), torsions(reference)
    if sample_weights is not None and len(sample_weights) != samples.n_frames:
        raise ValueError(f"{len(sample_weights)} weights for {samples.n_frames} sample frames")
    common = sorted(set(a) & set(b))
    one_d = {key: jsd_1d(a[key], b[key], weights_a=sample_weights) for key in common}
    pa, pb = backbone_pairs(a), backbone_pairs(b)
    two_d = {f"phi_psi:{res}": jsd_2d(pa[res], pb[res], weights_a=sample_weights)
             for res in sorted(set(pa) & set(pb))}
    backbone = [v for k, v in one_d.items() if k.startswith(("phi", "psi"))]
    sidechain = [v for k, v in one_d.items() if k.startswith("chi")]
    return {
        "torsion_1d": one_d,
        "phi_psi_2d": two_d,
        "mean_backbone_1d": float(np.mean(backbone)) if backbone else None,
        "mean_sidechain_1d": float(np.mean(sidechain)) if sidechain else None,
        "mean_phi_psi_2d": float(np.mean(list(two_d.values()))) if two_d else None,
    }
