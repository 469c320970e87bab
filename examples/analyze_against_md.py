"""Sample a capped dipeptide, run reference MD of it, and compare the two ensembles.

    python examples/analyze_against_md.py AA --md-ns 1 --steps 20000

Writes example-out/<SEQ>-md (jamun md), example-out/<SEQ>-jamun (jamun sample) and
example-out/<SEQ>-jamun/analysis (torsion JSDs, TICA, MSM states, validity; PNG plots).
"""

import argparse
import json

from openmm_jamun.analysis.report import analyze
from openmm_jamun.data.md import run_md
from openmm_jamun.sample import run_sampling

parser = argparse.ArgumentParser()
parser.add_argument("sequence", nargs="?", default="AA")
parser.add_argument("--md-ns", type=float, default=1.0)
parser.add_argument("--steps", type=int, default=20000)
parser.add_argument("--chains", type=int, default=8)
args = parser.parse_args()

md_dir, jamun_dir = f"example-out/{args.sequence}-md", f"example-out/{args.sequence}-jamun"
run_md(args.sequence, md_dir, ns=args.md_ns, threads=1)
run_sampling(args.sequence, jamun_dir, steps=args.steps, chains=args.chains, overwrite=True)
result = analyze(jamun_dir, md_dir, f"{jamun_dir}/analysis")
print(json.dumps({"torsions": {k: v for k, v in result["torsions"].items() if k.startswith("mean")},
                  "tica": result["tica"], "states_jsd": result["msm"]["jsd_states"],
                  "validity": result["validity"]}, indent=2))
