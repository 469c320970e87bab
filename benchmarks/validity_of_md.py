"""What the validity definition says of real MD: the calibration of its clash threshold.

A validity rule that flags the force field's own equilibrium frames calls thermal contacts broken
chemistry. For each reference MD run (amber14 + GBn2, `jamun md`) this prints the share of frames
failing each check of openmm_jamun.analysis.validity, and the share the clash check would flag at
other multiples of the Bondi radii (the closest heavy-atom pair ≥ 4 bonds apart, over the sum of
their radii, is below the scale). The shipped CLASH_SCALE is the largest of these at which no
reference is flagged in more than 0.1% of its frames.

    python benchmarks/validity_of_md.py references/capped_2aa/AA references/capped_2aa/VD references/capped_2aa/QW
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openmm_jamun.analysis.validity import CHECKS, CLASH_SCALE, frame_validity  # noqa: E402
from openmm_jamun.data.md import load_md_frames  # noqa: E402

SCALES = (0.95, 0.9, 0.85, 0.8, 0.75)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("md_dirs", nargs="+", help="`jamun md` output directories")
    parser.add_argument("--stride", type=int, default=1)
    args = parser.parse_args()
    print(f"shipped clash scale: {CLASH_SCALE} x Bondi")
    header = f"{'reference':<28}{'frames':>7}{'valid':>8}" + "".join(f"{c:>14}" for c in CHECKS)
    header += "".join(f"{'clash@' + str(s):>12}" for s in SCALES)
    print(header)
    for md_dir in args.md_dirs:
        traj = load_md_frames(md_dir, heavy_atoms_only=False, stride=args.stride)
        validity = frame_validity(traj)
        ratio = validity["min_contact_ratio"]
        row = f"{md_dir:<28}{traj.n_frames:>7}{validity['valid'].mean():>8.4f}"
        row += "".join(f"{(~validity[c]).mean():>14.4f}" for c in CHECKS)
        row += "".join(f"{(ratio < s).mean():>12.4f}" for s in SCALES)
        print(row, flush=True)
    print("columns after 'valid': the share of frames failing each check; clash@s: the share the clash check flags at s x Bondi")


if __name__ == "__main__":
    main()
