"""Unit handling at the API boundary.

Users hand us ``openmm.unit`` quantities; inside the package everything is a
plain float in OpenMM's units (nm, ps, K, kJ/mol, amu). Plain numbers are
accepted and read in those units, exactly as OpenMM's own classes do; a
quantity in an incompatible unit (a temperature in nanometers, say) is an
error that names the argument.
"""

from __future__ import annotations

import math

from openmm import unit

#: kT in kJ/mol per kelvin (R in kJ/(mol K)).
_R_KJ_PER_MOL_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def to_plain(value, target_unit: unit.Unit, name: str) -> float:
    """Return ``value`` as a float in ``target_unit``.

    Plain numbers are taken to be in ``target_unit`` already (OpenMM's
    convention). Incompatible units and non-finite values raise.
    """
    if unit.is_quantity(value):
        if not value.unit.is_compatible(target_unit):
            raise TypeError(
                f"{name} must be a quantity in units compatible with {target_unit} "
                f"(or a plain number in {target_unit}); got {value}"
            )
        value = value.value_in_unit(target_unit)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an openmm.unit quantity; got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite; got {number}")
    return number


def kT_kj_per_mol(temperature_kelvin: float) -> float:
    """Thermal energy kT in kJ/mol at a temperature in kelvin."""
    return _R_KJ_PER_MOL_K * temperature_kelvin


def temperature_kelvin(temperature, name: str = "temperature") -> float:
    value = to_plain(temperature, unit.kelvin, name)
    if value <= 0:
        raise ValueError(f"{name} must be positive; got {value} K")
    return value


def length_nm(length, name: str) -> float:
    value = to_plain(length, unit.nanometer, name)
    if value <= 0:
        raise ValueError(f"{name} must be positive; got {value} nm")
    return value


def inverse_length_per_nm(value, name: str) -> float:
    return to_plain(value, unit.nanometer**-1, name)


def jamun_mass(mass) -> float:
    """JAMUN's dimensionless mass M (a walk particle's mass is M·kT), checked."""
    if unit.is_quantity(mass):
        raise TypeError(f"mass is JAMUN's dimensionless M (particle mass = M·kT); pass a plain number, not {mass}")
    value = float(mass)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"mass must be positive; got {mass}")
    return value


def denoiser_sigma_nm(sigma, denoiser_sigma_nm: float) -> float:
    """σ in nm: the denoiser's own when ``sigma`` is None; a different one is an error (a denoiser knows
    only the noise level it was trained at)."""
    if sigma is None:
        return float(denoiser_sigma_nm)
    value = length_nm(sigma, "sigma")
    if not math.isclose(value, denoiser_sigma_nm, rel_tol=1e-6, abs_tol=0.0):
        raise ValueError(f"sigma mismatch: the denoiser was trained at sigma = {denoiser_sigma_nm} nm, "
                         f"but sigma = {value} nm was requested")
    return value
