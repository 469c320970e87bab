"""Relaxing the samples of a ``jamun sample`` run directory: ``relaxed.dcd`` beside ``samples.dcd``.

Frame f of ``relaxed.dcd`` is frame f of ``samples.dcd`` relaxed, with every chain of the run in the
same order, all atoms (``relaxed_topology.pdb``). Frames are relaxed in batches (a batch holds whole
frames, K chains each) and appended a batch at a time, so an interrupted relaxation resumes after
the last whole frame. ``run.json`` gets a ``relaxation`` record: settings, the validity of raw and
relaxed frames (:mod:`openmm_jamun.analysis.validity`, counted over every frame) and the heavy atoms'
RMS shift.
"""

from __future__ import annotations

import os
import time

import mdtraj
import numpy as np
from openmm import app, unit
from tqdm import tqdm

from .analysis.validity import CHECKS, ValidityChecker, frame_validity
from .records import RunFiles, SettingsMismatchError, changed_settings, check_same_settings, read_json, write_json
from .relax import Relaxer, relaxation_method, replicate_topology
from .trajectory import dcd_frame_count, truncate_trajectory


def _empty_counts() -> dict:
    return {"frames": 0, "valid": 0, "failing": {check: 0 for check in CHECKS}}


def _add_counts(counts: dict, validity: dict) -> None:
    counts["frames"] += int(len(validity["valid"]))
    counts["valid"] += int(np.sum(validity["valid"]))
    for check in CHECKS:
        counts["failing"][check] += int(np.sum(~validity[check]))


def _fractions(counts: dict) -> dict:
    frames = max(counts["frames"], 1)
    return {"frames": counts["frames"], "valid_fraction": counts["valid"] / frames,
            "failing_fraction": {check: n / frames for check, n in counts["failing"].items()}}


def relaxed_frames_done(files: RunFiles) -> int:
    """Whole frames already in ``relaxed.dcd`` (0 when there is none)."""
    if not (os.path.isfile(files.relaxed) and os.path.isfile(files.relaxed_topology)):
        return 0
    return dcd_frame_count(files.relaxed)


def _method_changes(kept_settings: dict, method: dict) -> dict:
    """{name: (kept, now)} of the method settings (``relax.relaxation_method``) that differ from those
    recorded with a relaxation; one recorded before a setting existed differs in it."""
    kept = {name: kept_settings.get(name, "not recorded") for name in method}
    return changed_settings(kept, method)


def relaxation_is_current(relaxation: dict) -> bool:
    """Whether a run's ``relaxation`` record was made by the relaxation this package does now, in the
    solvent it records (asking a resumed relaxation for another is an error of its own): the method
    of every setting and constant, not only the options."""
    settings = relaxation.get("settings", {})
    implicit = settings.get("implicit", "vacuum")
    return not _method_changes(settings, relaxation_method(None if implicit == "vacuum" else implicit))


def relax_samples(run_dir, *, implicit: str | None = None, batch_size: int | None = None, threads: int | None = 1,
                  platform: str = "CPU", progress: bool = True, restart: bool = False) -> dict:
    """Relax the samples of ``run_dir`` into ``relaxed.dcd`` (resuming a relaxation that stopped, or
    from the first frame with ``restart``); returns the ``relaxation`` record also written to ``run.json``.

    ``batch_size`` molecules are minimised together (default 64), whole frames of K chains at a
    time. L-BFGS on a batch depends on what else is in it, so a resumed relaxation keeps its batch
    size and restarts at the first batch it had not finished: its frames are an uninterrupted run's to
    the minimiser's precision (a fresh CPU Context sums forces in another order)."""
    files = RunFiles(run_dir)
    if not (os.path.isfile(files.samples) and os.path.isfile(files.record)):
        raise FileNotFoundError(f"{run_dir} is not a jamun sample run directory (no {files.samples} or run.json)")
    record = read_json(files.record)
    kept = None if restart else record.get("relaxation")
    done = relaxed_frames_done(files) if kept else 0
    if done:
        check_same_settings(f"the relaxation of {run_dir}", kept["settings"], {"implicit": implicit or "vacuum",
                                                                                "batch_size": batch_size})
        batch_size = kept["settings"]["batch_size"]
    batch_size = batch_size or 64
    samples = mdtraj.load(files.samples, top=files.topology)
    chains = int(record["chains"])
    per_chain = samples.n_atoms // chains
    chain_topology = samples.topology.subset(range(per_chain)).to_openmm()
    start = mdtraj.load(files.topology).xyz[0, :per_chain]  # the input structure: the hydrogen template
    relaxer = Relaxer(chain_topology, start * unit.nanometer, implicit=implicit, batch_size=batch_size,
                      platform=platform, threads=threads)
    checker = ValidityChecker(chain_topology, start * unit.nanometer)
    frames_per_batch = max(1, batch_size // chains)
    settings = {**relaxer.settings(), "implicit": implicit or "vacuum", "batch_size": batch_size}
    changes = _method_changes(kept["settings"], relaxer.method()) if done else {}
    if changes:
        listed = "; ".join(f"{name} {new!r} (the run has {old!r})" for name, (old, new) in changes.items())
        raise SettingsMismatchError(f"cannot resume the relaxation of {run_dir} with {listed}: its frames were "
                                    "relaxed another way (another version of this package); relax them again "
                                    "from the first frame (jamun relax --restart)")

    # what the finished batches counted; a batch cut short is relaxed again
    batches = kept.get("batches", []) if done else []
    batches = batches[: min(done, len(batches) * frames_per_batch) // frames_per_batch]
    done = len(batches) * frames_per_batch
    all_atom = replicate_topology(relaxer.topology, chains)
    if done:
        truncate_trajectory(files.relaxed, done)
    handle = open(files.relaxed, "r+b" if done else "wb")
    writer = None
    bar = tqdm(total=samples.n_frames, initial=done, unit="frame", disable=not progress, desc="relax")
    try:
        for first in range(done, samples.n_frames, frames_per_batch):
            batch = samples.xyz[first:first + frames_per_batch]
            heavy = batch.reshape(-1, per_chain, 3)
            started = time.perf_counter()
            result = relaxer.relax(heavy)
            wall_s = time.perf_counter() - started
            positions = result.positions.reshape(len(batch), chains * result.positions.shape[1], 3)
            if writer is None:
                if not done:
                    finite = np.isfinite(positions).all(axis=(1, 2))
                    template = positions[int(np.argmax(finite))] if finite.any() else np.zeros_like(positions[0])
                    with open(files.relaxed_topology, "w") as pdb:
                        app.PDBFile.writeFile(all_atom, template * unit.nanometer, pdb, keepIds=True)
                writer = app.DCDFile(handle, all_atom, 1.0 * unit.picosecond, 1, 1, bool(done))
            for frame in positions:
                writer.writeModel(frame * unit.nanometer)
            handle.flush()
            raw, relaxed = _empty_counts(), _empty_counts()
            _add_counts(raw, frame_validity(heavy, checker=checker))
            _add_counts(relaxed, result.validity)
            reasons = {}
            for reason in result.reasons:
                if reason is not None:
                    reasons[reason] = reasons.get(reason, 0) + 1
            batches.append({"raw": raw, "relaxed": relaxed, "rms_shift_sum_nm": float(np.nansum(result.rms_shift_nm)),
                            "invalid_reasons": reasons, "wall_s": round(wall_s, 3),
                            "planar_centres_finished": int(result.planar_centres_finished.sum())})
            bar.update(len(batch))
    finally:
        bar.close()
        handle.close()
        relaxation = _summary(batches, chains)
        relaxation.update(settings=settings, batches=batches, trajectory=os.path.basename(files.relaxed),
                          topology=os.path.basename(files.relaxed_topology))
        record["relaxation"] = relaxation
        write_json(files.record, record)
    return relaxation


def _summary(batches: list, chains: int) -> dict:
    raw, relaxed, reasons, shift, planar = _empty_counts(), _empty_counts(), {}, 0.0, 0
    for batch in batches:
        for total, part in ((raw, batch["raw"]), (relaxed, batch["relaxed"])):
            total["frames"] += part["frames"]
            total["valid"] += part["valid"]
            for check in CHECKS:
                total["failing"][check] += part["failing"][check]
        shift += batch["rms_shift_sum_nm"]
        planar += batch["planar_centres_finished"]
        for reason, count in batch["invalid_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return {"frames": raw["frames"] // chains, "raw": _fractions(raw), "relaxed": _fractions(relaxed),
            "invalid_reasons": reasons, "mean_rms_shift_nm": shift / max(relaxed["frames"], 1),
            "planar_centres_finished": planar,
            "wall_time_s": round(sum(batch.get("wall_s", 0.0) for batch in batches), 2)}
