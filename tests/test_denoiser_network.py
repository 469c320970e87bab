"""The e3nn denoiser: SE(3) equivariance, chirality, export, chains, OpenMM."""

import warnings

import numpy as np
import openmm
import pytest
import torch
from e3nn import o3
from openmm import app, unit

from conftest import random_network

import openmm_jamun as oj
from openmm_jamun.data.build import build_peptide, write_pdb
from openmm_jamun.model import DenoiserContractError, load_denoiser
from openmm_jamun.model.export import export_denoiser, load_checkpoint, save_checkpoint
from openmm_jamun.model.featurize import RESIDUES, featurize
from openmm_jamun.model.network import NetworkConfig, chain_edges, graph_edges


def random_denoiser(seed=0, config=None):
    return random_network("direct", seed, config)


@pytest.fixture(scope="module")
def dipeptide():
    topology, positions = build_peptide("AD", minimize=False)
    return topology, positions


@pytest.fixture(scope="module")
def pentapeptide():
    return build_peptide("KWFSA", minimize=False)


def heavy_positions(topology, positions):
    features = featurize(topology)
    return torch.tensor(positions.value_in_unit(unit.nanometer)[features.atom_indices], dtype=torch.float32)


@pytest.mark.parametrize("which,tensor_product", [("dipeptide", "channelwise"), ("pentapeptide", "channelwise"),
                                                  ("dipeptide", "fully_connected")])
def test_rotation_and_translation_equivariance(which, tensor_product, request):
    """Both convolutions: the CPU default and the published one (examples/train_capped_2aa_gpu.json)."""
    topology, positions = request.getfixturevalue(which)
    config = NetworkConfig(hidden_scalars=16, hidden_vectors=4, num_layers=2, tensor_product=tensor_product)
    model = export_denoiser(random_denoiser(config=config), topology)
    y = heavy_positions(topology, positions) + 0.04 * torch.randn(model.num_atoms, 3)
    out = model(y)
    assert (out - y).abs().max() > 1e-3  # the model does something
    for seed in range(3):
        torch.manual_seed(seed)
        R = o3.rand_matrix()
        t = torch.randn(3)
        rotated = model(y @ R.T + t)
        torch.testing.assert_close(rotated, out @ R.T + t, atol=1e-5, rtol=1e-4)


def test_mirror_images_are_told_apart(dipeptide):
    topology, positions = dipeptide
    model = export_denoiser(random_denoiser(config=NetworkConfig()), topology)  # the default size
    y = heavy_positions(topology, positions)
    out = model(y)
    c_skip = model.denoiser.c_skip

    def network_part(y, xhat):  # x̂ − c_skip·(y − ȳ) − ȳ = c_out·F
        mean = y.mean(0)
        return xhat - c_skip * (y - mean) - mean

    r, r_mirror = network_part(y, out), network_part(-y, model(-y))
    # an E(3) model would give exactly r(−y) = −r(y) (to ~1e-7); this one must not.
    # The difference comes from l=1 ⊗ l=1 → l=1 (cross-product) paths, from the second block on.
    assert (r_mirror + r).abs().max() > 0.02 * r.abs().max() > 0
    # while a proper rotation (det +1) commutes exactly
    R = -torch.eye(3)
    R[2, 2] = 1.0  # rotation by π about z
    torch.testing.assert_close(model(y @ R.T), out @ R.T, atol=1e-5, rtol=1e-4)


def test_export_equals_eager_and_chains_equal_separate_calls(dipeptide):
    topology, positions = dipeptide
    denoiser = random_denoiser()
    features = featurize(topology)
    n = features.num_atoms
    K = 4
    ys = [heavy_positions(topology, positions) + 0.04 * torch.randn(n, 3) + 3.0 * k for k in range(K)]
    adjacency = torch.zeros(K * n, K * n, dtype=torch.bool)
    for k in range(K):
        b = torch.as_tensor(features.bonds) + k * n
        adjacency[b[0], b[1]] = adjacency[b[1], b[0]] = True
    eager = denoiser(torch.cat(ys), torch.as_tensor(features.element).repeat(K),
                     torch.as_tensor(features.atom_name).repeat(K), torch.as_tensor(features.residue).repeat(K),
                     torch.arange(K).repeat_interleave(n), adjacency, K).detach()
    single = export_denoiser(denoiser, topology, chains=1)
    multi = export_denoiser(denoiser, topology, chains=K)
    assert multi.num_atoms == K * n and multi.num_chains == K
    separate = torch.cat([single(y) for y in ys])
    torch.testing.assert_close(multi(torch.cat(ys)), separate, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(separate, eager, atol=1e-6, rtol=1e-5)


def test_chain_edges_match_graph_edges_and_never_cross_chains():
    torch.manual_seed(1)
    K, n = 3, 7
    pos = 0.4 * torch.randn(K, n, 3)  # chains overlap in space
    adjacency = torch.zeros(n, n, dtype=torch.bool)
    adjacency[0, 6] = adjacency[6, 0] = True
    src, dst, bonded = chain_edges(pos, adjacency, 0.5)
    full = torch.block_diag(*[adjacency.int()] * K).bool()
    src2, dst2, bonded2 = graph_edges(pos.reshape(-1, 3), torch.arange(K).repeat_interleave(n), full, 0.5)
    assert sorted(zip(src.tolist(), dst.tolist(), bonded.tolist())) == sorted(
        zip(src2.tolist(), dst2.tolist(), bonded2.tolist()))
    assert (src // n == dst // n).all() and (src != dst).all()
    assert bonded.sum() == 2 * K


def test_checkpoint_round_trip(tmp_path, dipeptide):
    denoiser = random_denoiser(3)
    save_checkpoint(tmp_path / "c.pt", denoiser, step=7)
    again, record = load_checkpoint(tmp_path / "c.pt")
    assert record["step"] == 7 and again.sigma == 0.04 and again.average_squared_distance == 0.2
    topology, positions = dipeptide
    y = heavy_positions(topology, positions)
    torch.testing.assert_close(export_denoiser(again, topology)(y), export_denoiser(denoiser, topology)(y))


def test_exported_denoiser_runs_in_openmm(tmp_path, dipeptide):
    topology, positions = dipeptide
    pdb_path = tmp_path / "ad.pdb"
    write_pdb(pdb_path, topology, positions)
    model_path = tmp_path / "model.pt"
    export_denoiser(random_denoiser(), app.PDBFile(str(pdb_path)).topology, path=model_path)
    model, info = load_denoiser(model_path)
    assert info.kind == "network" and info.atom_names[:3] == ("CH3", "C", "O")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        walk = oj.create_noised_system(str(pdb_path), denoiser=str(model_path), seed=0)
    for backend in ("torch", "python"):
        system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(walk.system))
        system.addForce(oj.make_jamun_force(str(model_path), backend=backend))
        simulation = app.Simulation(walk.topology, system, oj.JamunIntegrator(),
                                    openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
        simulation.context.setPositions(walk.positions)
        simulation.context.setVelocities(walk.velocities)
        simulation.reporters.append(oj.JumpReporter(str(tmp_path / f"j_{backend}.pdb"), 5))
        simulation.step(20)
        y = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value
        assert np.isfinite(y).all()


def test_unknown_residue_warns_and_maps_to_other(dipeptide):
    topology, _ = dipeptide
    residue = list(topology.residues())[1]
    residue.name = "XYZ"
    try:
        with pytest.warns(UserWarning, match="XYZ"):
            features = featurize(topology)
        assert RESIDUES[features.residue[3]] == "other"
    finally:
        residue.name = "ALA"


def test_topologies_without_heavy_atoms_are_errors():
    empty = app.Topology()
    with pytest.raises(ValueError, match="empty"):
        featurize(empty)
    only_h = app.Topology()
    residue = only_h.addResidue("HOH", only_h.addChain())
    only_h.addAtom("H1", app.Element.getBySymbol("H"), residue)
    with pytest.raises(ValueError, match="no heavy atoms"):
        featurize(only_h)


def test_export_metadata_is_checked(tmp_path, dipeptide):
    topology, _ = dipeptide
    path = tmp_path / "m.pt"
    export_denoiser(random_denoiser(), topology, path=path)
    model = torch.jit.load(str(path))
    model.atom_names = ["C"]  # a corrupted export
    with pytest.raises(DenoiserContractError, match="atom_names"):
        load_denoiser(model)
    model = torch.jit.load(str(path))
    model.jamun_format_version = 99
    with pytest.raises(DenoiserContractError, match="format version 99"):
        load_denoiser(model)
    # and a model for another topology is refused by the walk builder
    for sequence, message in (("AW", "denoiser is for 18 atoms"), ("DA", "exported for another topology")):
        other_topology, other_positions = build_peptide(sequence, minimize=False)
        with pytest.raises(ValueError, match=message):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                oj.create_noised_system(other_topology, other_positions, str(path))
