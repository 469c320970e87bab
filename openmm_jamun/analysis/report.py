"""`jamun analyze`: compare a sample run (or any trajectory) with reference MD; JSON + PNG plots."""

from __future__ import annotations

import math
import os
from pathlib import Path

import mdtraj
import numpy as np

from ..model.registry import denoiser_for, resolve_model
from ..data.md import TOPOLOGY_FILE, TRAJECTORY_FILE, load_md_frames
from ..records import RELAXED, RELAXED_TOPOLOGY, SAMPLES, TOPOLOGY, WEIGHTS, write_json
from ..topology import heavy_atom_slice
from .ensemble import compare_ensembles, jump_of_reference, score_asymmetry
from .validity import ValidityChecker, frame_validity, validity_summary
from .plots import ramachandran, state_probabilities, tica_densities
from .torsions import backbone_pairs, split_chains, torsion_jsds, torsions


def load_heavy(path: str, topology: str | None = None):
    """A heavy-atom trajectory from a `jamun sample` run dir, a `jamun md` dir, or a trajectory file.
    K-chain sample runs are pooled into one chain."""
    p = Path(path)
    if p.is_dir() and not (p / SAMPLES).is_file() and (p / TRAJECTORY_FILE).is_file():
        return split_chains(load_md_frames(str(p)))
    if p.is_dir():
        for traj_name, top_name in ((SAMPLES, TOPOLOGY), (TRAJECTORY_FILE, TOPOLOGY_FILE)):
            if (p / traj_name).is_file():
                path, topology = str(p / traj_name), str(p / top_name)
                break
        else:
            raise FileNotFoundError(f"{p} holds neither {SAMPLES} (jamun sample) nor {TRAJECTORY_FILE} (jamun md)")
    elif topology is None:
        raise ValueError(f"{path}: give --top for a bare trajectory file")
    traj = mdtraj.load(path, top=topology)
    traj = heavy_atom_slice(traj)
    return split_chains(traj)


def sample_weights(run_dir: str, frames: int):
    """The weights of a metadynamics run's samples (``weights.csv`` in the run directory ``run_dir``,
    or ``run_dir`` itself when it is such a file), in :func:`load_heavy`'s pooled order (chain 0's
    frames, then chain 1's, ...), normalised; None for a run without them. A file that does not
    match the samples frame for frame is an error, never a silent misalignment."""
    path = Path(run_dir) if Path(run_dir).is_file() else Path(run_dir) / WEIGHTS
    if not path.is_file():
        return None
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    frame, chain, weight = table[:, 0].astype(int), table[:, 1].astype(int), table[:, 5]
    chains = int(chain.max()) + 1 if len(chain) else 0
    if len(table) != frames or chains == 0 or len(table) % chains:
        raise ValueError(f"{path} has {len(table)} rows for {frames} sample frames (chains pooled): "
                         "the weights do not belong to these samples")
    pooled = np.zeros(len(table))
    pooled[chain * (len(table) // chains) + frame] = weight
    return pooled / pooled.sum()


def relaxed_all_atom(run_dir: str):
    """The relaxed all-atom samples of a ``jamun sample`` run directory (K chains pooled), or None."""
    p = Path(run_dir)
    if not (p.is_dir() and (p / RELAXED).is_file() and (p / RELAXED_TOPOLOGY).is_file()):
        return None
    return split_chains(mdtraj.load(str(p / RELAXED), top=str(p / RELAXED_TOPOLOGY)))


def relaxed_samples(run_dir: str):
    """The heavy atoms of :func:`relaxed_all_atom`, in the raw samples' frame and atom order, or None."""
    relaxed = relaxed_all_atom(run_dir)
    return None if relaxed is None else heavy_atom_slice(relaxed)


def analyze(samples: str, reference: str, out: str, lag: int = 10, states: int = 4, top: str | None = None,
            model: str | None = None, jump_frames: int = 2000, weights: str | None = None) -> dict:
    """Compare ``samples`` with ``reference``; with ``model`` (a name in models/, a checkpoint or a
    one-chain TorchScript export) also the jump of σ-noised reference frames ("reference_jump"),
    which separates the denoiser's error from the walk's. A metadynamics run's ``weights.csv`` is
    used when ``samples`` is its directory; ``weights`` names one for a bare trajectory."""
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist")
    sample_traj, ref_traj = load_heavy(samples, top), load_heavy(reference)
    ours = [f"{a.residue.name}:{a.name}" for a in sample_traj.topology.atoms]
    theirs = [f"{a.residue.name}:{a.name}" for a in ref_traj.topology.atoms]
    if ours != theirs:
        raise ValueError(f"samples and reference are different molecules ({len(ours)} vs {len(theirs)} heavy atoms, "
                         "or other atom names)")
    denoiser = None
    if model is not None:  # a model that cannot be found or cannot handle the molecule fails before any output
        model_path = resolve_model(model)
        denoiser = denoiser_for(model_path, ref_traj.topology.to_openmm(), chains=1)
    weights_file = Path(weights) if weights is not None else Path(samples) / WEIGHTS if Path(samples).is_dir() else None
    weights = None if weights_file is None else sample_weights(str(weights_file), sample_traj.n_frames)
    result = compare_ensembles(sample_traj, ref_traj, lag=lag, states=states, sample_weights=weights)
    if weights is not None:
        result["weights"] = {"file": str(weights_file), "effective_sample_size":
                             float(1.0 / np.sum(weights ** 2)),
                             "used_for": "every torsion, TICA and state JSD, the state populations and the plots"}
    # one validity definition for every frame set; the reference's first frame is the all-atom template
    checker = ValidityChecker(ref_traj.topology, ref_traj.xyz[0])
    result["validity"] = validity_summary(frame_validity(sample_traj, checker=checker))
    projections = result.pop("_projections")
    os.makedirs(out, exist_ok=True)
    result["plots"] = {
        "ramachandran": ramachandran(backbone_pairs(torsions(sample_traj)), os.path.join(out, "ramachandran.png"),
                                     backbone_pairs(torsions(ref_traj)), weights=weights),
        "tica": tica_densities(projections["samples"], projections["reference"], os.path.join(out, "tica.png"),
                               weights=weights),
        "states": state_probabilities(result["msm"]["sample_probabilities"],
                                      result["msm"]["reference_probabilities"], os.path.join(out, "states.png")),
    }
    result["inputs"] = {"samples": samples, "reference": reference, "sample_frames": int(sample_traj.n_frames),
                        "reference_frames": int(ref_traj.n_frames)}
    relaxed = relaxed_samples(samples)
    if relaxed is not None:
        finite = np.isfinite(relaxed.xyz).all(axis=(1, 2))
        shift = np.sqrt(((relaxed.xyz[finite] - sample_traj.xyz[finite]) ** 2).sum(-1).mean(-1))
        relaxed_weights = None if weights is None else weights[finite] / weights[finite].sum()
        result["relaxed"] = {"frames": int(relaxed.n_frames),
                             "torsions": torsion_jsds(relaxed[finite], ref_traj, relaxed_weights),
                             "rms_shift_nm": float(shift.mean()) if len(shift) else None,
                             "validity": validity_summary(frame_validity(relaxed_all_atom(samples)))}
    if denoiser is not None:
        jumped, rms_error = jump_of_reference(denoiser, ref_traj, max_frames=jump_frames)
        result["reference_jump"] = {
            "model": str(model_path), "frames": int(jumped.n_frames), "sigma_nm": float(denoiser.sigma),
            "rms_error_nm": rms_error, "noise_rms_nm": float(denoiser.sigma) * 3**0.5,
            "torsions": torsion_jsds(jumped, ref_traj), "validity": validity_summary(frame_validity(jumped, checker=checker)),
            "score_asymmetry": score_asymmetry(denoiser, ref_traj)}
    write_json(os.path.join(out, "analysis.json"), _strict_json(result), allow_nan=False)
    return result


def _strict_json(value):
    """``value`` with numpy scalars as Python numbers and non-finite floats (an infinite decorrelation
    time) as null: JSON has no Infinity, and strict parsers (jq, JavaScript) reject it."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
