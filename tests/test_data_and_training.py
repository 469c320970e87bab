"""Peptide building, reference MD, datasets and training (single process, resume, DDP)."""

import json
import os
import random
import subprocess
import sys

import mdtraj
import numpy as np
import pytest
import torch
from openmm import unit

from openmm_jamun.data.build import build_peptide, check_sequence
from openmm_jamun.data.dataset import average_squared_distance, find_peptides, load_peptide, split_by_peptide
from openmm_jamun.data.md import run_md
from openmm_jamun.train import TrainConfig, train
from openmm_jamun.train.trainer import kabsch_align


def test_build_peptide_capped_and_uncapped():
    topology, positions = build_peptide("AD")
    assert [r.name for r in topology.residues()] == ["ACE", "ALA", "ASP", "NME"]
    assert topology.getNumAtoms() == 34 and np.isfinite(positions._value).all()
    topology, _ = build_peptide("GAS", caps=False)
    names = [a.name for a in topology.atoms()]
    assert "OXT" in names and "H3" in names  # zwitterion: NH3+ and COO-
    with pytest.raises(ValueError, match="'B', 'X'"):
        check_sequence("AXB")
    with pytest.raises(ValueError, match="length"):
        check_sequence("A" * 11)


def test_build_peptide_is_reproducible_and_leaves_the_callers_random_alone():
    """addHydrogens places new hydrogens with Python's random: the build seeds it and restores the
    caller's state, so two builds are bit-identical whatever the caller's random state, and the
    caller's random stream continues as if no build had run (unseeded, two builds of AA differed
    by 0.18 nm at hydrogens and 0.0017 nm at heavy atoms)."""
    from openmm_jamun.data.build import _built_peptide

    _built_peptide.cache_clear()  # really build twice
    random.seed(123)
    expected_next = random.Random(123).random()
    _, first = build_peptide("AA")
    assert random.random() == expected_next  # the caller's stream is untouched
    random.seed(999)
    _built_peptide.cache_clear()
    _, second = build_peptide("AA")
    np.testing.assert_array_equal(first.value_in_unit(unit.nanometer), second.value_in_unit(unit.nanometer))


def test_a_kept_build_is_not_shared_with_its_callers():
    """build_peptide keeps its builds for the process: what one caller changes, the next does not see."""
    topology, positions = build_peptide("AA")
    atoms = topology.getNumAtoms()
    topology.addChain()
    positions[0] = [9.0, 9.0, 9.0] * unit.nanometer
    again_topology, again = build_peptide("AA")
    assert again_topology is not topology and again_topology.getNumChains() == 1
    assert again_topology.getNumAtoms() == atoms and not np.allclose(again[0].value_in_unit(unit.nanometer), 9.0)


def test_md_with_the_same_seed_gives_identical_frames(tmp_path):
    """A new run of a sequence with a seed is reproducible (one CPU thread: with several, the CPU
    platform's force sums depend on the threads' timing)."""
    frames = []
    for name in ("first", "second"):
        run_md("A", str(tmp_path / name), ns=0.005, seed=3, threads=1, equilibration=1 * unit.picosecond,
               progress=False)
        frames.append(mdtraj.load(str(tmp_path / name / "traj.xtc"), top=str(tmp_path / name / "topology.pdb")).xyz)
    assert frames[0].shape == (5, 22, 3)
    np.testing.assert_array_equal(frames[0], frames[1])


def test_md_writes_frames_sidecar_and_resumes(md_root, tmp_path):
    record = json.load(open(md_root / "A" / "md.json"))
    assert record["force_field"] == ["amber14-all.xml", "implicit/gbn2.xml"]
    assert record["frames"] == 20 and record["seed"] == 1 and record["temperature_K"] == 300
    traj = mdtraj.load(str(md_root / "A" / "traj.xtc"), top=str(md_root / "A" / "topology.pdb"))
    assert traj.n_frames == 20 and traj.n_atoms == 22
    assert np.allclose(np.diff(traj.time), 1.0)
    # extend: resumes from the checkpoint and appends exactly the missing frames
    out = tmp_path / "A"
    run_md("A", str(out), ns=0.01, seed=2, threads=1, equilibration=1 * unit.picosecond, progress=False,
           chunk_frames=5)
    first = mdtraj.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
    run_md("A", str(out), ns=0.015, threads=1, equilibration=1 * unit.picosecond, progress=False, chunk_frames=5)
    both = mdtraj.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
    assert both.n_frames == 15
    np.testing.assert_allclose(both.xyz[:10], first.xyz, atol=1e-6)
    # a resumed run keeps its own equilibration (here 1 ps, not the 100 ps default): no frame lost
    run_md("A", str(out), ns=0.02, threads=1, progress=False, chunk_frames=5)
    longer = mdtraj.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
    assert longer.n_frames == 20 and json.load(open(out / "md.json"))["frames"] == 20
    np.testing.assert_allclose(longer.xyz[:15], both.xyz, atol=1e-6)
    # settings that differ from the run's md.json, or another peptide, are errors, and touch nothing
    with pytest.raises(ValueError, match="temperature_K 310"):
        run_md("A", str(out), ns=0.03, temperature=310 * unit.kelvin, threads=1, progress=False)
    with pytest.raises(ValueError, match="equilibration_ps 100"):
        run_md("A", str(out), ns=0.03, equilibration=100 * unit.picosecond, threads=1, progress=False)
    with pytest.raises(ValueError, match="holds MD of"):
        run_md("G", str(out), ns=0.03, threads=1, progress=False)
    with pytest.raises(ValueError, match=r"seed 5 \(the run has 2\)"):
        run_md("A", str(out), ns=0.03, seed=5, threads=1, progress=False)
    run_md("A", str(out), ns=0.02, seed=2, threads=1, progress=False)  # its own seed, given again: fine
    assert mdtraj.load(str(out / "traj.xtc"), top=str(out / "topology.pdb")).n_frames == 20



def test_md_can_store_heavy_atoms_only_and_resumes_so(tmp_path):
    """trajectory_atoms="heavy" (how the training set is stored): a heavy-atom XTC the loaders read,
    an all-atom checkpoint that resumes, and the same frames' heavy atoms as an all-atom run."""
    from openmm_jamun.data.md import load_md_frames

    kwargs = dict(seed=4, threads=1, equilibration=1 * unit.picosecond, progress=False, chunk_frames=5)
    run_md("A", str(tmp_path / "all"), ns=0.01, **kwargs)
    run_md("A", str(tmp_path / "heavy"), ns=0.005, trajectory_atoms="heavy", **kwargs)
    run_md("A", str(tmp_path / "heavy"), ns=0.01, **kwargs)  # resumes with the run's own choice
    heavy = load_md_frames(str(tmp_path / "heavy"))
    assert heavy.n_frames == 10 and heavy.n_atoms == 10
    assert mdtraj.load_topology(str(tmp_path / "heavy" / "topology.pdb")).n_atoms == 22
    np.testing.assert_allclose(heavy.xyz, load_md_frames(str(tmp_path / "all")).xyz, atol=2e-3)
    with pytest.raises(ValueError, match="heavy atoms only"):
        load_md_frames(str(tmp_path / "heavy"), heavy_atoms_only=False)
    with pytest.raises(ValueError, match="trajectory_atoms 'all'"):
        run_md("A", str(tmp_path / "heavy"), ns=0.02, trajectory_atoms="all", **kwargs)
    # a run recorded before trajectory_atoms existed stored all atoms: asking for heavy is a change
    record = json.load(open(tmp_path / "all" / "md.json"))
    del record["trajectory_atoms"]
    (tmp_path / "all" / "md.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="trajectory_atoms 'heavy'"):
        run_md("A", str(tmp_path / "all"), ns=0.02, trajectory_atoms="heavy", **kwargs)
    with pytest.raises(ValueError, match="trajectory_atoms must be one of"):
        run_md("A", str(tmp_path / "x"), ns=0.01, trajectory_atoms="backbone", **kwargs)

def test_dataset_split_by_peptide_and_A(md_root):
    names = find_peptides(str(md_root))
    assert names == ["A", "uGAS"]
    train, val = split_by_peptide(names, val_names=["uGAS"])
    assert train == ["A"] and val == ["uGAS"]
    with pytest.raises(ValueError, match="not in the data"):
        split_by_peptide(names, val_names=["XX"])
    peptide = load_peptide(str(md_root / "A"))
    assert peptide.frames.shape == (20, 10, 3) and peptide.features.num_atoms == 10
    A = average_squared_distance([peptide], cutoff=1.0)
    assert 0.05 < A < 0.5  # nm²: a dipeptide's heavy atoms are a few Å apart


def test_sampler_balances_frames_or_peptides(md_root):
    from dataclasses import replace

    from openmm_jamun.data.dataset import FrameSampler

    long = load_peptide(str(md_root / "A"))  # 20 frames
    # 2 frames, moved 10 nm away so that a drawn graph tells which peptide it came from
    short = replace(long, name="short", frames=long.frames[:2] + 10.0)

    def fraction_short(balance):
        batch = FrameSampler([long, short], seed=2, balance=balance).sample(1000)
        centroid_x = np.bincount(batch.graph_index.numpy(), weights=batch.positions[:, 0].numpy()) / long.num_atoms
        return float(np.mean(centroid_x > 5.0))

    assert fraction_short("frames") == pytest.approx(2 / 22, abs=0.04)
    assert fraction_short("peptides") == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ValueError, match="balance"):
        FrameSampler([long], seed=0, balance="residues")


def test_kabsch_alignment_undoes_a_rotation():
    from e3nn import o3

    x = torch.randn(2 * 6, 3, dtype=torch.float64)
    index = torch.arange(2).repeat_interleave(6)
    x = x - torch.stack([x[:6].mean(0)] * 6 + [x[6:].mean(0)] * 6)
    R = o3.rand_matrix(dtype=torch.float64)
    torch.testing.assert_close(kabsch_align(x @ R.T, x, index, 2), x)


def _config(md_root, out, **kw):
    base = dict(data_root=str(md_root), train=["A"], val=["uGAS"], out=str(out),
                model=dict(hidden_scalars=8, hidden_vectors=2, num_layers=1, num_basis=8, radial_hidden=8),
                batch_size=8, max_steps=30, val_every=10, val_batches=1, checkpoint_every=10, seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_loss_and_resume_continues(md_root, tmp_path):
    train(_config(md_root, tmp_path / "run", lr=1e-2), progress=False)
    log = [json.loads(line) for line in open(tmp_path / "run" / "train_log.jsonl")]
    assert [e["step"] for e in log] == [10, 20, 30]
    # the same validation frames and noise at every entry: with lr 0 the three losses are equal
    assert log[-1]["val_loss"] < log[0]["val_loss"]
    record = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert record["step"] == 30

    # an interrupted run (stopped after step 20) resumed to 30 ends where the uninterrupted run ended
    train(_config(md_root, tmp_path / "split", lr=1e-2, max_steps=20), progress=False)
    train(_config(md_root, tmp_path / "split", lr=1e-2, max_steps=30), progress=False)
    resumed = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 30
    for key, value in record["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value)
    # a resume with settings that change the run is refused, naming them
    with pytest.raises(ValueError, match=r"another run \(lr: 0.01 -> 0.02; batch_size: 8 -> 4\)"):
        train(_config(md_root, tmp_path / "split", lr=2e-2, batch_size=4, max_steps=40), progress=False)
    # a seed too large for a 64-bit generator seed once mixed with rank and step is refused up front
    with pytest.raises(ValueError, match="seed must lie in"):
        _config(md_root, tmp_path / "x", seed=2**40)
    assert train(_config(md_root, tmp_path / "big", seed=20250101, max_steps=2), progress=False)["steps"] == 2


def test_fine_tuning_starts_from_the_given_weights(md_root, tmp_path):
    train(_config(md_root, tmp_path / "base", max_steps=10), progress=False)
    base = torch.load(tmp_path / "base" / "checkpoint.pt", weights_only=True)
    # lr 0: the fine-tuned weights must be exactly the ones it started from, with its own step count
    tuned_config = _config(md_root, tmp_path / "tuned", train=["uGAS"], val=[], max_steps=5, lr=0.0,
                           init_from=str(tmp_path / "base" / "checkpoint.pt"))
    train(tuned_config, progress=False)
    tuned = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=True)
    assert tuned["step"] == 5 and tuned["init_from"] == tuned_config.init_from
    assert tuned["train"] == ["uGAS", "A"]  # every peptide the weights have seen: the card's binding list
    assert tuned["average_squared_distance"] == base["average_squared_distance"]
    for key, value in base["state_dict"].items():
        torch.testing.assert_close(tuned["state_dict"][key], value)

    other_network = dict(hidden_scalars=16, hidden_vectors=2, num_layers=1, num_basis=8, radial_hidden=8)
    with pytest.raises(ValueError, match="differs from the config's model"):
        train(_config(md_root, tmp_path / "bad", model=other_network, init_from=tuned_config.init_from),
              progress=False)
    with pytest.raises(FileNotFoundError, match="init_from"):
        train(_config(md_root, tmp_path / "missing", init_from=str(tmp_path / "nope.pt")), progress=False)
    # validating on a peptide the starting weights were trained on would not measure unseen peptides
    with pytest.raises(ValueError, match=r"trained on \['A'\], which this run validates on"):
        train(_config(md_root, tmp_path / "leak", train=["uGAS"], val=["A"], init_from=tuned_config.init_from),
              progress=False)


def test_weight_averaging_is_what_validation_best_and_release_use(md_root, tmp_path):
    from openmm_jamun.model.export import EMA_STATE, write_release

    def weights(path, key="state_dict"):
        return torch.load(path, weights_only=True)[key]

    # lr 0: the raw weights stay the initial ones
    train(_config(md_root, tmp_path / "still", lr=0.0), progress=False)
    initial = weights(tmp_path / "still" / "checkpoint.pt")
    # decay 1: the average never moves from the initial weights while the raw ones do
    train(_config(md_root, tmp_path / "frozen", lr=1e-2, ema_decay=1.0), progress=False)
    frozen = torch.load(tmp_path / "frozen" / "checkpoint.pt", weights_only=True)
    for key, value in initial.items():
        torch.testing.assert_close(frozen[EMA_STATE][key], value)
        torch.testing.assert_close(weights(tmp_path / "frozen" / "best.pt")[key], value)
    assert any(not torch.equal(frozen["state_dict"][k], v) for k, v in initial.items())
    card = write_release(tmp_path / "frozen" / "checkpoint.pt", tmp_path / "released.pt", {"hardware": "test"})
    for key, value in initial.items():
        torch.testing.assert_close(weights(tmp_path / "released.pt")[key], value)
    assert card["released_from"] == "checkpoint.pt at step 30" and card["hardware"] == "test"
    with pytest.raises(ValueError, match=r"extra fields \['sigma_nm'\] would overwrite"):
        write_release(tmp_path / "frozen" / "checkpoint.pt", tmp_path / "other.pt", {"sigma_nm": 0.4})
    # decay 0: the average is the raw weights
    train(_config(md_root, tmp_path / "raw", lr=1e-2, ema_decay=0.0), progress=False)
    raw = torch.load(tmp_path / "raw" / "checkpoint.pt", weights_only=True)
    for key, value in raw["state_dict"].items():
        torch.testing.assert_close(raw[EMA_STATE][key], value)
    # an interrupted run resumes its average too
    train(_config(md_root, tmp_path / "whole", lr=1e-2, ema_decay=0.9), progress=False)
    train(_config(md_root, tmp_path / "split", lr=1e-2, ema_decay=0.9, max_steps=20), progress=False)
    train(_config(md_root, tmp_path / "split", lr=1e-2, ema_decay=0.9), progress=False)
    whole, split = (weights(tmp_path / d / "checkpoint.pt", EMA_STATE) for d in ("whole", "split"))
    for key, value in whole.items():
        torch.testing.assert_close(split[key], value)
    with pytest.raises(ValueError, match="ema_decay"):
        _config(md_root, tmp_path / "bad", ema_decay=1.5)


def test_first_loss_matches_the_skip_only_denoiser(md_root, tmp_path):
    """With output gain 0, x̂ = c_skip·y, whose weighted loss is known: E‖c_skip·y − x‖²/c_out² (≈ 0.5)."""
    from openmm_jamun.data.dataset import FrameSampler
    from openmm_jamun.model.network import Denoiser, NetworkConfig
    from openmm_jamun.train.trainer import denoising_loss

    peptide = load_peptide(str(md_root / "A"))
    A = average_squared_distance([peptide], 1.0)
    denoiser = Denoiser(NetworkConfig(num_layers=1), 0.04, A)
    batch = FrameSampler([peptide], 0).sample(64)
    loss = denoising_loss(denoiser, batch, 0.04, denoiser.c_out, torch.Generator().manual_seed(0)).mean().item()
    # E‖(c_skip−1)x + c_skip·σε‖² per atom / c_out²; centring and rotational alignment remove
    # 6 of the 3n noise degrees of freedom.
    n = peptide.num_atoms
    x = peptide.frames - peptide.frames.mean(1, keepdims=True)
    expected = ((1 - denoiser.c_skip) ** 2 * (x**2).sum(-1).mean()
                + 3 * denoiser.c_skip**2 * 0.04**2 * (3 * n - 6) / (3 * n)) / denoiser.c_out**2
    assert loss == pytest.approx(expected, rel=0.15)


def test_mirrored_examples_turn_every_centre_d_and_keep_its_bond(md_root, tmp_path):
    """flip_fraction: each chosen graph's CB is reflected through its N-CA-C plane (L becomes D);
    0 leaves the noise draws as they were."""
    from openmm_jamun.data.dataset import FrameSampler
    from openmm_jamun.model.featurize import ATOM_NAMES, RESIDUES
    from openmm_jamun.train.trainer import center, noised_positions

    batch = FrameSampler([load_peptide(str(md_root / "A"))], 0).sample(16)
    x = center(batch.positions, batch.graph_index, batch.num_graphs)

    def noised(**kw):  # σ small enough that noise never turns a centre over
        return noised_positions(x, batch, 1e-4, torch.Generator().manual_seed(3), align=False, **kw)

    def handedness(y):
        ala = batch.residue == RESIDUES.index("ALA")  # the caps have an N and a C of their own
        n, ca, c, cb = (y[(batch.atom_name == ATOM_NAMES.index(name)) & ala] for name in ("N", "CA", "C", "CB"))
        return ((n - ca) * torch.linalg.cross(c - ca, cb - ca)).sum(-1), (cb - ca).norm(dim=-1)

    plain = noised()
    torch.testing.assert_close(noised(flip_fraction=0.0), plain, rtol=0, atol=0)
    before, bond_before = handedness(plain)
    after, bond_after = handedness(noised(flip_fraction=1.0))
    assert len(before) == batch.num_graphs and (before > 0).all() and (after < 0).all()
    torch.testing.assert_close(after, -before, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(bond_after, bond_before, rtol=1e-5, atol=1e-7)
    rest = batch.atom_name != ATOM_NAMES.index("CB")  # the rest of the molecule is where it was
    flipped = noised(flip_fraction=1.0)
    for graph in range(batch.num_graphs):  # (each graph is centred on its own)
        atoms = rest & (batch.graph_index == graph)
        torch.testing.assert_close(torch.cdist(flipped[atoms], flipped[atoms]), torch.cdist(plain[atoms], plain[atoms]),
                                   rtol=1e-5, atol=1e-6)
    # a longer side chain turns over whole: Ser's OG keeps its distances to CB and CA
    batch = FrameSampler([load_peptide(str(md_root / "uGAS"))], 0).sample(4)
    x = center(batch.positions, batch.graph_index, batch.num_graphs)
    ser = batch.residue == RESIDUES.index("SER")
    pick = {name: (batch.atom_name == ATOM_NAMES.index(name)) & ser for name in ("N", "CA", "C", "CB", "OG")}
    for sign, y in ((1.0, noised()), (-1.0, noised(flip_fraction=1.0))):
        n, ca, c, cb, og = (y[pick[name]] for name in ("N", "CA", "C", "CB", "OG"))
        assert len(og) == 4
        torch.testing.assert_close((og - cb).norm(dim=-1), (x[pick["OG"]] - x[pick["CB"]]).norm(dim=-1),
                                   rtol=0, atol=1e-3)
        torch.testing.assert_close((og - ca).norm(dim=-1), (x[pick["OG"]] - x[pick["CA"]]).norm(dim=-1),
                                   rtol=0, atol=1e-3)
        volumes = ((n - ca) * torch.linalg.cross(c - ca, cb - ca)).sum(-1)
        assert (sign * volumes > 0).all()
    with pytest.raises(ValueError, match="flip_fraction"):
        _config(md_root, tmp_path / "bad", flip_fraction=-0.1)


def test_twisted_examples_turn_one_atom_about_a_neighbouring_bond(md_root, tmp_path):
    """twist_fraction: in each chosen graph one atom a moves, keeping its distance to a bonded
    neighbour b and to b's other neighbour c (bond and angle kept); nothing else moves."""
    from openmm_jamun.data.dataset import FrameSampler
    from openmm_jamun.train.trainer import center, noised_positions

    batch = FrameSampler([load_peptide(str(md_root / "A"))], 0).sample(16)
    x = center(batch.positions, batch.graph_index, batch.num_graphs)

    def noised(**kw):
        return noised_positions(x, batch, 0.04, torch.Generator().manual_seed(3), align=False, **kw)

    plain = noised()
    torch.testing.assert_close(noised(twist_fraction=0.0), plain, rtol=0, atol=0)
    twisted = noised(twist_fraction=1.0)
    moved_graphs = 0
    for graph in range(batch.num_graphs):
        atoms = (batch.graph_index == graph).nonzero().flatten()
        before, after = torch.cdist(plain[atoms], plain[atoms]), torch.cdist(twisted[atoms], twisted[atoms])
        changed = (after - before).abs() > 1e-5
        rows = changed.any(dim=1).nonzero().flatten()
        if len(rows) == 0:
            continue
        moved_graphs += 1
        a = int(changed.sum(dim=1).argmax())  # the one atom every changed distance involves
        assert changed.sum() == 2 * changed[a].sum()
        bonded = batch.bond_adjacency[atoms][:, atoms]
        kept_bonds = [int(b) for b in bonded[a].nonzero().flatten() if not changed[a, b]]
        assert kept_bonds and any(not changed[a, c] for b in kept_bonds for c in bonded[b].nonzero().flatten()
                                  if int(c) != a)
    assert moved_graphs >= batch.num_graphs // 2
    with pytest.raises(ValueError, match="twist_fraction"):
        _config(md_root, tmp_path / "bad", twist_fraction=2.0)


def test_stretched_examples_move_one_atom_of_the_chosen_graphs(md_root, tmp_path):
    """stretch_fraction: the same σ-noise, plus one atom of each chosen graph moved up to stretch_nm."""
    from openmm_jamun.data.dataset import FrameSampler
    from openmm_jamun.train.trainer import center, noised_positions

    batch = FrameSampler([load_peptide(str(md_root / "A"))], 0).sample(16)
    x = center(batch.positions, batch.graph_index, batch.num_graphs)
    plain = noised_positions(x, batch, 0.04, torch.Generator().manual_seed(3), align=False)
    same = noised_positions(x, batch, 0.04, torch.Generator().manual_seed(3), align=False, stretch_fraction=0.0)
    torch.testing.assert_close(same, plain, rtol=0, atol=0)
    stretched = noised_positions(x, batch, 0.04, torch.Generator().manual_seed(3), align=False,
                                 stretch_fraction=1.0, stretch_nm=0.3)
    moved = (stretched - plain).norm(dim=-1)
    assert moved.max() > 0.1  # lengths uniform in [0, 0.3 nm]: the largest of 16 is almost surely above
    for graph in range(batch.num_graphs):
        distances = moved[batch.graph_index == graph].sort(descending=True).values
        n = len(distances)  # one atom moved by d; centring then shifts every atom by −d/n
        assert distances[0] <= 0.3 * (n - 1) / n
        torch.testing.assert_close(distances[0], (n - 1) * distances[1], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(distances[1:], distances[1].expand(n - 1), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="stretch_fraction"):
        _config(md_root, tmp_path / "bad", stretch_fraction=1.5)


def test_ddp_with_two_gloo_processes(md_root, tmp_path):
    config = _config(md_root, tmp_path / "ddp", max_steps=4, val_every=2, checkpoint_every=2)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config.__dict__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "openmm_jamun.cli", "train", str(path), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["step"] == 4


def test_cosine_learning_rate_schedule():
    from openmm_jamun.train.trainer import TrainConfig, learning_rate

    config = TrainConfig(data_root=".", train=["AC"], val=[], out=".", lr=2e-3, lr_min=1e-5,
                         lr_schedule="cosine", lr_decay_start=100, max_steps=300)
    assert learning_rate(config, 50) == 2e-3
    assert learning_rate(config, 100) == 2e-3
    assert abs(learning_rate(config, 200) - (1e-5 + 0.5 * (2e-3 - 1e-5))) < 1e-12
    assert abs(learning_rate(config, 300) - 1e-5) < 1e-12
    assert learning_rate(TrainConfig(data_root=".", train=["AC"], val=[], out="."), 10**6) == 2e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(data_root=".", train=["AC"], val=[], out=".", lr_schedule="linear")


def test_bad_training_configs_name_the_problem(tmp_path, capsys):
    from openmm_jamun.cli import main

    config = tmp_path / "config.json"
    for data, match in (({"train": ["AA"], "val": []}, r"missing training config key\(s\) \['data_root', 'out'\]"),
                        ({"data_root": ".", "train": ["AA"], "val": [], "out": ".", "lr0": 1},
                         r"unknown training config key\(s\) \['lr0'\]"),
                        (["AA"], "a JSON object of TrainConfig fields")):
        config.write_text(json.dumps(data))
        with pytest.raises(SystemExit, match=match):
            main(["train", str(config)])
