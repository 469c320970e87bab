"""Energy-parametrised (conservative) denoisers: the network, its export, the contract, JamunForce's
real energy on both backends, and the analytic Gaussian mixture."""

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from e3nn import o3
from openmm import unit

import openmm_jamun as oj
from conftest import BACKENDS, random_network
from openmm_jamun.data.build import build_peptide
from openmm_jamun.model import DenoiserContractError, load_denoiser
from openmm_jamun.model.export import export_denoiser, load_checkpoint, save_checkpoint
from openmm_jamun.model.featurize import featurize
from openmm_jamun.model.network import Denoiser, EnergyDenoiser, NetworkConfig

SIGMA = 0.04


def random_energy_denoiser(seed=0):
    return random_network("energy", seed, sigma=SIGMA)


@pytest.fixture(scope="module")
def dipeptide():
    topology, positions = build_peptide("AD", minimize=False)
    heavy = positions.value_in_unit(unit.nanometer)[featurize(topology).atom_indices]
    return topology, torch.tensor(heavy, dtype=torch.float32), positions


@pytest.fixture(scope="module")
def energy_model(dipeptide):
    return export_denoiser(random_energy_denoiser(), dipeptide[0])


def gradient(fn, y):
    y = y.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(y), [y])
    return grad


def test_exported_jump_is_y_minus_sigma2_grad_energy(dipeptide, energy_model):
    topology, x, _ = dipeptide
    torch.manual_seed(1)
    y = x + SIGMA * torch.randn_like(x)
    xhat = energy_model(y)
    torch.testing.assert_close(xhat, y - SIGMA**2 * gradient(energy_model.energy, y), atol=1e-7, rtol=0)
    assert (xhat - y).abs().max() > 1e-3  # the model does something
    with torch.no_grad():  # forward takes its own gradient whatever the caller's grad mode
        torch.testing.assert_close(energy_model(y), xhat, atol=1e-7, rtol=0)
    # the training path (EnergyDenoiser.forward on a batch) is the same function as the export
    features = featurize(topology)
    denoiser = random_energy_denoiser()
    n = len(x)
    bonds = torch.as_tensor(features.bonds)
    adjacency = torch.zeros(n, n, dtype=torch.bool)
    adjacency[bonds[0], bonds[1]] = adjacency[bonds[1], bonds[0]] = True
    args = (torch.as_tensor(features.element), torch.as_tensor(features.atom_name), torch.as_tensor(features.residue),
            torch.zeros(n, dtype=torch.long), adjacency, 1)
    torch.testing.assert_close(denoiser(y, *args), xhat, atol=1e-6, rtol=0)
    torch.testing.assert_close(denoiser.energy(y, *args)[0], energy_model.energy(y), atol=1e-5, rtol=1e-6)
    # the JAMUN form: E = ‖g(y) − y‖²/2σ² with g the direct network of the same weights
    direct = Denoiser(denoiser.config, SIGMA, 0.2)
    direct.load_state_dict(denoiser.state_dict())
    g = export_denoiser(direct, topology)(y)
    torch.testing.assert_close(energy_model.energy(y), ((g - y) ** 2).sum() / (2 * SIGMA**2), atol=1e-4, rtol=1e-5)


def test_bond_limit_adds_the_noised_bond_tail_past_the_limit(dipeptide, tmp_path):
    """E_θ with bond_limit L is E_θ without it plus Σ (r − L)²/(4σ²) over the bonds of y longer than
    L: nothing for a noised molecule, a pull back for a stretched bond; training path and export
    agree, the jump stays y − σ²∇E, and checkpoints keep L."""
    topology, x, _ = dipeptide
    features = featurize(topology)
    limit = 0.25
    plain = random_energy_denoiser()
    bounded = EnergyDenoiser(plain.config, SIGMA, 0.2, bond_limit=limit)
    bounded.load_state_dict(plain.state_dict())
    bounded.eval()
    torch.manual_seed(4)
    noised = x + SIGMA * torch.randn_like(x)
    i, j = (int(v) for v in features.bonds[:, 3])
    stretched = noised.clone()
    stretched[j] += 0.3 * (noised[j] - noised[i]) / (noised[j] - noised[i]).norm()
    y = torch.cat([noised, stretched])
    free, held = export_denoiser(plain, topology, chains=2), export_denoiser(bounded, topology, chains=2)
    lengths = np.linalg.norm(stretched.numpy()[features.bonds[0]] - stretched.numpy()[features.bonds[1]], axis=1)
    tail = float((np.clip(lengths - limit, 0, None) ** 2).sum() / (4 * SIGMA**2))
    assert tail > 10.0 and np.linalg.norm(noised.numpy()[features.bonds[0]] - noised.numpy()[features.bonds[1]],
                                          axis=1).max() < limit
    added = (held.chain_energies(y) - free.chain_energies(y)).detach()
    torch.testing.assert_close(added, torch.tensor([0.0, tail]), atol=1e-3, rtol=1e-5)
    xhat = held(y)
    torch.testing.assert_close(xhat, y - SIGMA**2 * gradient(held.energy, y), atol=1e-6, rtol=0)
    n = len(x)
    u = (stretched[j] - stretched[i]) / (stretched[j] - stretched[i]).norm()
    assert float((xhat[n + j] - free(y)[n + j]) @ u) < -0.01  # pulled back along the bond
    torch.testing.assert_close(xhat[:n], free(y)[:n], atol=1e-6, rtol=0)  # the noised chain feels nothing
    # the training path (a batch of both molecules) carries the same term, each on its own molecule
    bonds = torch.as_tensor(features.bonds)
    adjacency = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    for first in (0, n):
        adjacency[first + bonds[0], first + bonds[1]] = adjacency[first + bonds[1], first + bonds[0]] = True
    args = (torch.as_tensor(features.element).repeat(2), torch.as_tensor(features.atom_name).repeat(2),
            torch.as_tensor(features.residue).repeat(2), torch.arange(2).repeat_interleave(n), adjacency, 2)
    torch.testing.assert_close(bounded.energy(y, *args), held.chain_energies(y), atol=1e-3, rtol=1e-5)
    # kept by checkpoints and releases; a direct model has no energy to add it to
    save_checkpoint(tmp_path / "b.pt", bounded)
    assert load_checkpoint(tmp_path / "b.pt")[0].bond_limit == limit
    assert export_denoiser(load_checkpoint(tmp_path / "b.pt")[0], topology).bond_limit == limit
    from openmm_jamun.model.network import build_denoiser
    with pytest.raises(ValueError, match="direct model has none"):
        build_denoiser("direct", plain.config, SIGMA, 0.2, bond_limit=limit)


def test_jump_of_chains_is_each_chain_alone(dipeptide):
    topology, x, _ = dipeptide
    denoiser = random_energy_denoiser()
    single, double = export_denoiser(denoiser, topology, chains=1), export_denoiser(denoiser, topology, chains=2)
    torch.manual_seed(2)
    y = torch.cat([x, x + 0.3]) + SIGMA * torch.randn(2 * len(x), 3)
    n = len(x)
    torch.testing.assert_close(double.chain_energies(y), torch.stack([single.energy(y[:n]), single.energy(y[n:])]))
    torch.testing.assert_close(double(y), torch.cat([single(y[:n]), single(y[n:])]), atol=1e-6, rtol=0)


def test_energy_is_invariant_under_rotation_and_translation_but_not_a_mirror(dipeptide, energy_model):
    _, x, _ = dipeptide
    torch.manual_seed(3)
    y = x + SIGMA * torch.randn_like(x)
    energy = energy_model.energy(y)
    for seed in range(3):
        torch.manual_seed(seed)
        R, t = o3.rand_matrix(), torch.randn(3)
        torch.testing.assert_close(energy_model.energy(y @ R.T + t), energy, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(energy_model(y @ R.T + t), energy_model(y) @ R.T + t, atol=1e-5, rtol=1e-4)
    mirrored = energy_model.energy(y * torch.tensor([-1.0, 1.0, 1.0]))
    assert abs(float(mirrored - energy)) > 1e-2 * abs(float(energy))


def test_energy_model_score_is_a_gradient_field(dipeptide, energy_model):
    """score_asymmetry (the antisymmetric part of ∂x̂/∂y) is 0 to float precision; the direct
    network of the same weights has a curl."""
    from openmm_jamun.analysis.ensemble import score_asymmetry

    topology, x, _ = dipeptide
    reference = mdtraj.Trajectory(x.numpy()[None].repeat(2, 0), mdtraj.Topology.from_openmm(topology).subset(
        featurize(topology).atom_indices))
    assert score_asymmetry(energy_model, reference, frames=2)["max"] < 1e-5
    direct = Denoiser(NetworkConfig(hidden_scalars=16, hidden_vectors=4, num_layers=2), SIGMA, 0.2)
    direct.load_state_dict(random_energy_denoiser().state_dict())
    assert score_asymmetry(export_denoiser(direct.eval(), topology), reference, frames=2)["mean"] > 1e-3


def test_energy_checkpoint_export_and_contract(dipeptide, tmp_path):
    topology, x, _ = dipeptide
    denoiser = random_energy_denoiser()
    save_checkpoint(tmp_path / "e.pt", denoiser, step=3)
    again, record = load_checkpoint(tmp_path / "e.pt")
    assert isinstance(again, EnergyDenoiser) and record["parametrization"] == "energy"
    # a direct checkpoint loads as its energy form (same weights): the start of a conservative fine-tune
    save_checkpoint(tmp_path / "d.pt", Denoiser(denoiser.config, SIGMA, 0.2))
    assert type(load_checkpoint(tmp_path / "d.pt")[0]) is Denoiser
    assert isinstance(load_checkpoint(tmp_path / "d.pt", parametrization="energy")[0], EnergyDenoiser)

    export_denoiser(again, topology, chains=2, path=tmp_path / "e.ts")
    module, info = load_denoiser(tmp_path / "e.ts")
    assert info.kind == "energy" and info.has_energy and info.parametrization == "energy" and info.num_chains == 2
    assert module.jamun_format_version == 2
    _, direct_info = load_denoiser(export_denoiser(Denoiser(denoiser.config, SIGMA, 0.2), topology))
    assert direct_info.kind == "network" and not direct_info.has_energy and direct_info.parametrization == "direct"

    # format version 1 (before energies) still loads; an energy kind claiming version 1 does not
    old, _, _ = oj.gaussian_example(4)
    old.jamun_format_version = 1
    assert load_denoiser(old)[1].kind == "gaussian"
    module.jamun_format_version = 1
    with pytest.raises(DenoiserContractError, match="format version >= 2"):
        load_denoiser(module)
    module.jamun_format_version = 3
    with pytest.raises(DenoiserContractError, match="upgrade openmm-jamun"):
        load_denoiser(module)


def test_mixture_jump_is_tweedie_and_energy_is_normalised():
    denoiser, _, x0, info = oj.mixture_example(3)
    torch.manual_seed(0)
    y = torch.tensor(x0.value_in_unit(unit.nanometer), dtype=torch.float64) + 0.07 * torch.randn(3, 3,
                                                                                                  dtype=torch.float64)
    torch.testing.assert_close(denoiser(y), y - SIGMA**2 * gradient(denoiser.energy, y), atol=1e-12, rtol=0)
    module, meta = load_denoiser(denoiser)
    assert meta.kind == "mixture" and meta.has_energy
    # E = −log p_Y exactly (normalised): scipy's density of the noised mixture, atom by atom
    from scipy.stats import multivariate_normal

    means = x0.value_in_unit(unit.nanometer)
    variances = (0.0**2 + SIGMA**2, 0.1**2 + SIGMA**2)  # mixture_example's default widths 0 and 0.1 nm
    shift = np.array([0.25, 0.0, 0.0])
    v1, v2 = variances
    density = np.prod([0.5 * multivariate_normal(m, v1 * np.eye(3)).pdf(p)
                       + 0.5 * multivariate_normal(m + shift, v2 * np.eye(3)).pdf(p) for p, m in zip(y.numpy(), means)])
    assert float(denoiser.energy(y)) == pytest.approx(-np.log(density), abs=1e-9)
    # the exact population of the first mode of the noised density (what the walk tests compare with)
    rng = np.random.default_rng(0)
    first = rng.random(400_000) < 0.5
    x = np.where(first, 0.0, 0.25 + 0.1 * rng.standard_normal(400_000)) + SIGMA * rng.standard_normal(400_000)
    assert np.mean(x < info["threshold"]) == pytest.approx(info["p_first"], abs=3e-3)


def _energy_and_forces(system, positions, platform):
    properties = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform),
                             properties)
    context.setPositions(positions)
    state = context.getState(getForces=True, getEnergy=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["mixture", "network"])
def test_force_reports_kT_energy_and_minus_its_gradient(which, backend, dipeptide, energy_model):
    """Both backends (Reference and CPU for the TorchForce: openmm-torch freezes the module there):
    U = kT·E, F = −kT∇E, both kept by an XmlSerializer round trip."""
    if which == "mixture":
        denoiser, topology, x0, _ = oj.mixture_example(3)
    else:
        denoiser, (topology, _, x0) = energy_model, dipeptide
    noised = oj.create_noised_system(topology, x0, denoiser, seed=4)
    force = oj.make_jamun_force(denoiser, backend=backend, temperature=350 * unit.kelvin, score_clip=None)
    assert force.has_energy
    noised.system.addForce(force)
    y = noised.positions.value_in_unit(unit.nanometer)
    kT = (unit.MOLAR_GAS_CONSTANT_R * 350 * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    yt = torch.tensor(y, dtype=torch.float32)
    expected_energy = kT * float(denoiser.energy(yt))
    expected_forces = -kT * gradient(denoiser.energy, yt).numpy()
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(noised.system))
    for system in (noised.system, copy):
        for platform in (["Reference", "CPU"] if backend == "torch" else ["Reference"]):
            energy, forces = _energy_and_forces(system, noised.positions, platform)
            assert energy == pytest.approx(expected_energy, rel=1e-5, abs=1e-3)
            np.testing.assert_allclose(forces, expected_forces, rtol=1e-4, atol=1e-3 * np.abs(expected_forces).max())
    assert np.abs(expected_forces).max() > 10.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_direct_force_keeps_reporting_zero_energy(gaussian10, backend):
    denoiser, topology, mu = gaussian10
    noised = oj.create_noised_system(topology, mu, denoiser, seed=0)
    force = oj.make_jamun_force(denoiser, backend=backend)
    assert not force.has_energy
    noised.system.addForce(force)
    energy, _ = _energy_and_forces(noised.system, noised.positions, "Reference")
    assert energy == 0.0


def test_energy_models_are_clipped_by_default_and_unclipped_on_request():
    """"auto" caps every model's score at 100/nm, an energy model's too (one unclipped kick where a
    learned energy is steep can throw a chain apart); None leaves an energy model's forces = −∇U
    everywhere; the energy itself is never clipped."""
    denoiser, topology, x0, _ = oj.mixture_example(1)
    far = np.array([[3.0, 0.0, 0.0]])  # 2.75 nm from the wide mode: |∇E| ≈ 237 /nm
    grad_norm = float(gradient(denoiser.energy, torch.tensor(far, dtype=torch.float32)).norm())
    energy = float(denoiser.energy(torch.tensor(far, dtype=torch.float32)))
    assert grad_norm > 200
    for clip, expected in (("auto", 100.0), (None, grad_norm), (5 / unit.nanometer, 5.0)):
        force = oj.JamunPythonForce(denoiser, score_clip=clip)
        system = openmm.System()
        system.addParticle(1.0)
        system.addForce(force)
        reported, forces = _energy_and_forces(system, far, "Reference")
        kT = force.kT.value_in_unit(unit.kilojoule_per_mole)
        assert np.linalg.norm(forces) / kT == pytest.approx(expected, rel=1e-5)
        assert reported / kT == pytest.approx(energy, rel=1e-5)


def _train_config(md_root, out, **kw):
    from openmm_jamun.train import TrainConfig

    base = dict(data_root=str(md_root), train=["A"], val=["uGAS"], out=str(out), parametrization="energy",
                model=dict(hidden_scalars=8, hidden_vectors=2, num_layers=1, num_basis=8, radial_hidden=8),
                batch_size=8, max_steps=12, val_every=1, val_batches=1, checkpoint_every=6, seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_conservative_training_lowers_the_loss_fine_tunes_and_resumes(md_root, tmp_path):
    import json

    from openmm_jamun.train import train

    def val_losses(run):
        return [json.loads(line)["val_loss"] for line in open(tmp_path / run / "train_log.jsonl")]

    # a direct model to start from (its weights are g's)
    train(_train_config(md_root, tmp_path / "direct", parametrization="direct", max_steps=4, lr=1e-2),
          progress=False)
    start = str(tmp_path / "direct" / "checkpoint.pt")
    direct_weights = torch.load(start, weights_only=True)["state_dict"]
    summary = train(_train_config(md_root, tmp_path / "energy", lr=1e-2, init_from=start), progress=False)
    assert summary["parametrization"] == "energy"
    losses = val_losses("energy")
    assert losses[-1] < losses[0] - 0.02, losses  # lr 0 leaves every validation loss equal
    denoiser, record = load_checkpoint(tmp_path / "energy" / "checkpoint.pt")
    assert isinstance(denoiser, EnergyDenoiser) and record["parametrization"] == "energy"
    assert record["init_from"] == start

    # lr 0: g stays exactly the direct model's weights
    train(_train_config(md_root, tmp_path / "still", lr=0.0, max_steps=2, init_from=start), progress=False)
    still = torch.load(tmp_path / "still" / "checkpoint.pt", weights_only=True)["state_dict"]
    for key, value in direct_weights.items():
        torch.testing.assert_close(still[key], value)

    # an interrupted energy run resumed to 12 ends where the uninterrupted one ended
    train(_train_config(md_root, tmp_path / "split", lr=1e-2, init_from=start, max_steps=6), progress=False)
    train(_train_config(md_root, tmp_path / "split", lr=1e-2, init_from=start), progress=False)
    whole = torch.load(tmp_path / "energy" / "checkpoint.pt", weights_only=True)["state_dict"]
    split = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["state_dict"]
    for key, value in whole.items():
        torch.testing.assert_close(split[key], value)
    # resuming it as a direct run is another run
    with pytest.raises(ValueError, match=r"parametrization: 'energy' -> 'direct'"):
        train(_train_config(md_root, tmp_path / "split", lr=1e-2, init_from=start, parametrization="direct",
                            max_steps=14), progress=False)
    with pytest.raises(ValueError, match="parametrization must be one of"):
        _train_config(md_root, tmp_path / "bad", parametrization="score")
    # bond_limit_nm is part of the run: another one is another run; a direct run has no E_θ to add it to
    with pytest.raises(ValueError, match=r"bond_limit_nm: 0.0 -> 0.3"):
        train(_train_config(md_root, tmp_path / "split", lr=1e-2, init_from=start, bond_limit_nm=0.3,
                            max_steps=14), progress=False)
    train(_train_config(md_root, tmp_path / "held", lr=1e-2, init_from=start, bond_limit_nm=0.3, max_steps=2),
          progress=False)
    assert torch.load(tmp_path / "held" / "checkpoint.pt", weights_only=True)["bond_limit_nm"] == 0.3
    with pytest.raises(ValueError, match="needs parametrization 'energy'"):
        _train_config(md_root, tmp_path / "bad", parametrization="direct", bond_limit_nm=0.3)


def test_conservative_training_with_ddp(md_root, tmp_path):
    import json
    import os
    import subprocess
    import sys

    config = _train_config(md_root, tmp_path / "ddp", max_steps=4, val_every=2, checkpoint_every=2)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config.__dict__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
         "-m", "openmm_jamun.cli", "train", str(path), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["steps"] == 4 and summary["parametrization"] == "energy"
    record = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert record["step"] == 4 and record["parametrization"] == "energy"
