"""Ensemble comparison of samples against reference MD.

* TICA (deeptime) fitted on the reference's torsion features (sin and cos of every
  backbone and side-chain torsion); JSD on TIC0 (1-D, 100 bins) and TIC0-TIC1 (2-D, 50×50).
* Metastable states: k-means (100 clusters) in the reference's TICA space → MSM →
  PCCA+ into a few states; state probabilities of samples vs reference and their JSD.
* Decorrelation times: autocorrelation of each torsion's sin and cos and of TIC0; the first
  lag at which it falls below 1/e, in frames (the caller scales to ps or wall seconds). A
  K-chain sample run pooled end to end (``split_chains``) is split into its chains again
  (``chain_starts``): lag products are taken within chains only, about the pooled mean.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import jensenshannon

from .torsions import JSD_BASE, chain_starts, torsions



def torsion_features(traj, keys=None) -> tuple[np.ndarray, list[str]]:
    """sin/cos of the torsions of ``traj`` ([T, 2m]) and the torsion keys used."""
    angles = torsions(traj)
    keys = sorted(angles) if keys is None else keys
    features = np.concatenate([np.stack([np.sin(angles[k]), np.cos(angles[k])], 1) for k in keys], axis=1)
    return features.astype(np.float64), keys


def _jsd_hist(a: np.ndarray, b: np.ndarray, bins, weights_a=None) -> float:
    if a.ndim == 1:
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        p = np.histogram(a, bins=bins, range=(lo, hi), weights=weights_a)[0]
        q = np.histogram(b, bins=bins, range=(lo, hi))[0]
    else:
        ranges = [(min(a[:, i].min(), b[:, i].min()), max(a[:, i].max(), b[:, i].max())) for i in range(2)]
        p = np.histogram2d(a[:, 0], a[:, 1], bins=bins, range=ranges, weights=weights_a)[0].ravel()
        q = np.histogram2d(b[:, 0], b[:, 1], bins=bins, range=ranges)[0].ravel()
    return float(jensenshannon(p.astype(float), q.astype(float), base=JSD_BASE))


def decorrelation_time(series: np.ndarray, max_lag: int | None = None, starts=None) -> float:
    """First lag (frames) where the normalised autocorrelation of ``series`` drops below 1/e;
    inf if it never does within ``max_lag`` (default: a third of the longest chain).

    ``starts``: the first frame of each independent chain when ``series`` holds several chains
    end to end (default: one chain). The autocorrelation at lag τ is then the mean of the lag-τ
    products within the chains, x_k(t)·x_k(t+τ), about the mean of all chains, over their
    variance: the multi-chain estimate of Gelman et al. (BDA3 §11.5) and Stan. No product spans
    two chains, and the chains share one mean (they sample one law): centring each chain on its
    own mean would bias short chains towards short times and hide chains stuck in different
    states, which this estimate reports as slow (inf). One chain: the usual estimate."""
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean()
    var = (x * x).mean()
    if var == 0:
        return 0.0
    n = len(x)
    bounds = np.unique(np.concatenate([np.asarray([] if starts is None else starts, dtype=np.int64), [0], [n]]))
    bounds = bounds[(bounds >= 0) & (bounds <= n)]
    lengths = np.diff(bounds)
    longest = int(lengths.max())
    max_lag = max_lag or max(1, longest // 3)
    sums = np.zeros(longest)
    counts = np.zeros(longest)
    for length in np.unique(lengths):  # chains of one length together: one batched FFT (blocks bound memory)
        rows = np.nonzero(lengths == length)[0]
        size = 1 << (2 * int(length) - 1).bit_length()
        for block in np.array_split(rows, min(len(rows), -(-len(rows) * size // 4_000_000))):
            chains = np.stack([x[bounds[i]:bounds[i + 1]] for i in block])
            spectrum = np.fft.rfft(chains, size, axis=1)
            sums[:length] += np.fft.irfft(spectrum * np.conj(spectrum), size, axis=1)[:, :length].sum(0)
        counts[:length] += len(rows) * np.arange(length, 0, -1)
    acf = sums / (var * counts)
    below = np.nonzero(acf[: max_lag + 1] < 1 / np.e)[0]
    return float(below[0]) if len(below) else float("inf")


def torsion_decorrelation(traj) -> dict[str, float]:
    """Decorrelation time (frames) of each torsion: the slower of its sin and cos (within the
    chains of a pooled K-chain run, see :func:`decorrelation_time`)."""
    starts = chain_starts(traj)
    out = {}
    for key, angle in torsions(traj).items():
        out[key] = max(decorrelation_time(np.sin(angle), starts=starts),
                       decorrelation_time(np.cos(angle), starts=starts))
    return out


def _chiral_centres(topology) -> tuple[np.ndarray, list[str]]:
    """(N, CA, C, CB) atom indices of every residue that has them (Gly has no CB), and their labels."""
    if hasattr(topology, "to_openmm"):  # an mdtraj Topology: same atom order, OpenMM's accessors
        topology = topology.to_openmm()
    quads, labels = [], []
    for residue in topology.residues():
        names = {atom.name: atom.index for atom in residue.atoms()}
        if all(name in names for name in ("N", "CA", "C", "CB")):
            quads.append([names["N"], names["CA"], names["C"], names["CB"]])
            labels.append(f"{residue.name}{residue.index + 1}")
    return np.array(quads, dtype=np.int64).reshape(-1, 4), labels


def d_amino_acids(xyz: np.ndarray, topology) -> tuple[np.ndarray, list[str]]:
    """Which residues are D amino acids, frame by frame: [T, R] booleans and the residues' labels.

    The handedness at CA is the sign of (N − CA)·((C − CA) × (CB − CA)), positive for every L amino
    acid. JAMUN models are trained on L peptides; a jump can mirror a centre (a walk that fell
    apart can), and a model given a D residue samples its L form."""
    quads, labels = _chiral_centres(topology)
    xyz = np.asarray(xyz)
    xyz = xyz.reshape(-1, *xyz.shape[-2:])
    n, ca, c, cb = (xyz[:, quads[:, k]] for k in range(4))
    volume = np.einsum("tri,tri->tr", n - ca, np.cross(c - ca, cb - ca))
    return volume < 0, labels


def _noised_reference_frames(denoiser, reference, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` evenly spaced reference frames x and x + σε (float32, nm), for a one-chain
    ``denoiser`` of the reference's molecule."""
    if denoiser.num_atoms != reference.n_atoms:
        raise ValueError(f"the denoiser is for {denoiser.num_atoms} atoms, the reference has {reference.n_atoms} "
                         "heavy atoms (a one-chain export for the reference's molecule is needed)")
    index = np.unique(np.linspace(0, reference.n_frames - 1, min(count, reference.n_frames)).astype(int))
    clean = reference.xyz[index].astype(np.float32)
    noise = float(denoiser.sigma) * np.random.default_rng(seed).standard_normal(clean.shape).astype(np.float32)
    return clean, clean + noise


def jump_of_reference(denoiser, reference, max_frames: int = 2000, seed: int = 0):
    """The jump x̂(x + σε) of up to ``max_frames`` evenly spaced reference frames x, as a
    trajectory, and the per-atom RMS error of those jumps (nm).

    These are the clean frames JAMUN would give if its walk sampled the noised density p_Y
    exactly: comparing them with the reference measures the denoiser's jump alone, so the rest
    of a sample run's gap to the reference is the walk's (the learned score's stationary law).
    ``denoiser`` is a one-chain TorchScript export for ``reference``'s topology."""
    import mdtraj
    import torch

    clean, noisy = _noised_reference_frames(denoiser, reference, max_frames, seed)
    with torch.no_grad():
        jumped = np.stack([denoiser(torch.from_numpy(y)).numpy() for y in noisy])
    # a jump keeps its noisy input's centre, which the noise moved: compare centred frames
    error = (jumped - jumped.mean(1, keepdims=True)) - (clean - clean.mean(1, keepdims=True))
    return mdtraj.Trajectory(jumped, reference.topology), float(np.sqrt((error**2).sum(-1).mean()))


def score_asymmetry(denoiser, reference, frames: int = 20, seed: int = 0) -> dict:
    """How far the learned score is from a gradient field, at σ-noised reference frames.

    The exact jump x̂(y) = E[x | y] has the Jacobian ∂x̂/∂y = Cov[x | y] / σ², a symmetric matrix:
    its score (x̂ − y)/σ² is the gradient of log p_Y, and a Langevin walk driven by it samples p_Y.
    A network that outputs x̂ directly need not be conservative; a non-gradient part of the score
    drives circulating currents that shift the walk's stationary law away from p_Y even where the
    jump itself is accurate. Returns the mean and max over ``frames`` evenly spaced frames of
    ‖D − Dᵀ‖_F / ‖D + Dᵀ‖_F, D = ∂x̂/∂y (0 for a conservative score; 3N backward passes a frame)."""
    import torch

    _, noisy = _noised_reference_frames(denoiser, reference, frames, seed)
    shape = noisy.shape[1:]
    ratios = []
    for y in noisy:
        jacobian = torch.autograd.functional.jacobian(
            lambda flat: denoiser(flat.reshape(shape)).reshape(-1), torch.from_numpy(y).reshape(-1))
        ratios.append(float(torch.linalg.norm(jacobian - jacobian.T) / torch.linalg.norm(jacobian + jacobian.T)))
    return {"frames": len(ratios), "mean": float(np.mean(ratios)), "max": float(np.max(ratios))}


def compare_ensembles(samples, reference, lag: int = 10, clusters: int = 100, states: int = 4,
                      seed: int = 0, sample_weights=None) -> dict:
    """Every comparison of this module; ``samples`` and ``reference`` are heavy-atom
    trajectories of the same molecule (same atom order). ``sample_weights`` [sample frames]: the
    weights of reweighted biased samples (metadynamics), used by every JSD histogram and state
    population; decorrelation times stay those of the biased walk."""
    from deeptime.clustering import KMeans
    from deeptime.decomposition import TICA
    from deeptime.markov.msm import MaximumLikelihoodMSM

    from .torsions import torsion_jsds

    weights = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float64)
    if weights is not None and weights.shape != (samples.n_frames,):
        raise ValueError(f"{weights.shape} sample weights for {samples.n_frames} sample frames")
    ref_features, keys = torsion_features(reference)
    sample_features, _ = torsion_features(samples, keys)
    tica = TICA(lagtime=lag, dim=2).fit(ref_features).fetch_model()
    ref_tics, sample_tics = tica.transform(ref_features), tica.transform(sample_features)
    result = {"jsd_base": "e", "torsions": torsion_jsds(samples, reference, weights),
              "tica": {"lag_frames": lag, "jsd_tic0": _jsd_hist(sample_tics[:, 0], ref_tics[:, 0], 100, weights),
                       "jsd_tic0_tic1": _jsd_hist(sample_tics[:, :2], ref_tics[:, :2], 50, weights)}}
    # The reference is a finite sample too: its two halves' distances are the floor below which a
    # sampler's distance to it says nothing (slow torsions make it high).
    half = reference.n_frames // 2
    halves = torsion_jsds(reference[:half], reference[half:])
    result["reference_halves"] = {
        "what": "the reference's first half against its second half",
        **{key: halves[key] for key in ("mean_backbone_1d", "mean_sidechain_1d", "mean_phi_psi_2d")},
        "jsd_tic0": _jsd_hist(ref_tics[:half, 0], ref_tics[half:, 0], 100)}

    k = min(clusters, max(2, len(ref_tics) // 20))
    kmeans = KMeans(n_clusters=k, max_iter=100, fixed_seed=seed, n_jobs=1).fit(ref_tics).fetch_model()
    ref_dtraj = kmeans.transform(ref_tics)
    msm = MaximumLikelihoodMSM(reversible=True, lagtime=lag).fit(ref_dtraj).fetch_model()
    n_states = min(states, msm.n_states)
    try:
        pcca = msm.pcca(n_states)
    except AssertionError:  # deeptime asserts when the MSM's slow eigenvectors are degenerate
        raise ValueError(f"PCCA+ into {n_states} states failed on the reference's {k}-cluster MSM at lag {lag}: "
                         "the reference is too short or too poorly connected (use a longer reference, a shorter "
                         "--lag or fewer --states)") from None
    # clusters outside the MSM's largest connected set get no state: count them apart
    state_of_cluster = np.full(k, -1)
    state_of_cluster[msm.state_symbols()] = pcca.assignments
    empty_states = int(n_states - len(np.unique(pcca.assignments)))  # PCCA+ can leave a state without clusters
    sample_states = state_of_cluster[kmeans.transform(sample_tics)]
    ref_states = state_of_cluster[ref_dtraj]
    # Nearest-centre assignment would put a sample far from every reference frame into some state:
    # frames farther from their centre than any reference frame is from its own are 'outside',
    # an extra state of reference probability 0.
    centres = kmeans.cluster_centers

    def nearest_distance(points):
        return np.min([np.linalg.norm(points - c, axis=1) for c in centres], axis=0)

    outside = nearest_distance(sample_tics) > nearest_distance(ref_tics).max()
    sample_states[outside] = n_states
    assigned = sample_states >= 0
    p = np.bincount(sample_states[assigned], weights=None if weights is None else weights[assigned],
                    minlength=n_states + 1) / (max(1, len(sample_states)) if weights is None else weights.sum())
    q = np.bincount(ref_states[ref_states >= 0], minlength=n_states + 1) / max(1, len(ref_states))
    result["msm"] = {"clusters": int(k), "states": int(n_states), "empty_states": empty_states, "lag_frames": lag,
                     "sample_probabilities": p[:n_states].tolist(), "reference_probabilities": q[:n_states].tolist(),
                     "msm_stationary": pcca.coarse_grained_stationary_probability.tolist(),
                     "jsd_states": float(jensenshannon(p + 1e-12, q + 1e-12, base=JSD_BASE)),
                     "sample_outside_fraction": float(np.average(outside, weights=weights)),
                     "sample_unassigned_fraction": float((sample_states < 0).mean()),
                     "reference_unassigned_fraction": float((ref_states < 0).mean())}
    result["decorrelation_frames"] = {
        "samples": {**torsion_decorrelation(samples),
                    "tic0": decorrelation_time(sample_tics[:, 0], starts=chain_starts(samples))},
        "reference": {**torsion_decorrelation(reference),
                      "tic0": decorrelation_time(ref_tics[:, 0], starts=chain_starts(reference))},
    }
    result["_projections"] = {"samples": sample_tics, "reference": ref_tics}
    return result
