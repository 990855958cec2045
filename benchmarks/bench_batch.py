#!/usr/bin/env python
"""Batched linear fits (``[cohort] batch``) against one subject at a time, on a synthetic cohort.

    python demos/synthetic_cohort.py --n 16 --out /tmp/synth16          # once: 16 subjects, 94 regions
    python benchmarks/bench_batch.py /tmp/synth16                        # stage fits: unbatched vs B = 1, 4, 8, 16
    python benchmarks/bench_batch.py /tmp/synth16 --recipe               # the same with the recipe's two stages
    python benchmarks/bench_batch.py /tmp/synth16 --cohort               # + end to end: tvb-torchfit cohort, 2 workers
    python benchmarks/bench_batch.py demos/hcp_cohort.toml --batches 7   # the stage fits of a cohort file's subjects

Stage fits: the subjects' linear stages (the cohort's run.toml, or with ``--recipe`` the package's default recipe:
global G with J_i following FIC, then region-wise nsig; or the stages of each subject of a cohort file), from the
same start, G_c computed beforehand (it is per
subject either way and not part of the timing; its time is printed). Unbatched: ``fit_stages`` per subject; batched:
``fit_stages_batch`` on consecutive groups of B subjects. Each variant is timed ``--repeats`` times (interleaved);
printed: the median wall time per subject and the ratio unbatched / batched (above 1: batching is faster).
torch on 1 thread (as a cohort's worker).

End to end (``--cohort``): ``tvb-torchfit cohort DIR/cohort.toml --workers 2 --quiet --set cohort.batch=B`` into a
fresh folder for B = 1 and B = 8 (fit + 30 s TVB validation per subject); printed: wall time and subjects per hour.
Nothing else heavy should run meanwhile (check ``uptime``).
"""
import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings

import torch


def subject_configs(source: str, recipe: bool):
    """[(run config, folder its relative paths are read from)] of the subjects: a cohort file's resolved subjects
    (``runs.cohort_config.load_cohort``), or a synthetic cohort folder's subjects with its run.toml (with ``recipe``:
    run.toml without its stages, i.e. the package's default recipe)."""
    from tvb_torchfit.runs.cohort_config import load_cohort
    from tvb_torchfit.runs.config import load_config
    if source.endswith(".toml"):
        return [(task.load(), os.path.dirname(task.config)) for task in load_cohort(source).tasks]
    run = os.path.join(source, "run.toml")
    if recipe:                          # run.toml without its stages: the default recipe's stages apply
        text = open(run).read().split("[[stages]]")[0]
        run = os.path.join(source, "run_recipe.toml")
        with open(run, "w") as f:
            f.write(text)
    out = []
    for d in sorted(glob.glob(os.path.join(source, "subjects", "sub-*"))):
        sets = [f'data.{k}="{d}/{f}"' for k, f in (("weights", "sc.csv"), ("tract_lengths", "lengths.npy"),
                                                     ("region_labels", "labels.txt"), ("bold", "bold.npy"))]
        out.append((load_config(run, sets), d))
    return out


def load_subjects(source: str, recipe: bool):
    from tvb_torchfit.analyzers.critical import critical_coupling
    from tvb_torchfit.runs.inputs import build_simulator, load_inputs, stage_maps
    from tvb_torchfit.runs.pipeline import to_stages
    from tvb_torchfit.simulator.adapter import read_simulator
    subjects, t_gc = [], 0.0
    for cfg, where in subject_configs(source, recipe):
        inputs = load_inputs(cfg, where)
        sim = build_simulator(cfg, inputs)
        t0 = time.perf_counter()
        G_c = critical_coupling(read_simulator(sim), cfg.run.fic_rate)
        t_gc += time.perf_counter() - t0
        subjects.append((sim, inputs.train_fc, inputs.train_bold, to_stages(cfg, stage_maps(cfg, inputs, where)), G_c))
    return subjects, t_gc / len(subjects)


def unbatched(subjects):
    from tvb_torchfit.inference.stages import fit_stages
    for sim, fc, bold, stages, G_c in subjects:
        fit_stages(sim, fc, stages, G_c=G_c, target_bold=bold, progress=False)


def batched(subjects, B: int):
    from tvb_torchfit.inference.stages import fit_stages_batch
    for i in range(0, len(subjects), B):
        group = subjects[i:i + B]
        out = fit_stages_batch([s[0] for s in group], [s[1] for s in group], [s[3] for s in group],
                               target_bolds=[s[2] for s in group], G_cs=[s[4] for s in group], progress=False)
        bad = [o for o in out if isinstance(o, Exception)]
        if bad:
            raise bad[0]


def stage_fits(args):
    subjects, gc = load_subjects(args.folder, args.recipe)
    n = len(subjects)
    print(f"{n} subjects, {subjects[0][0].connectivity.number_of_regions} regions, stages "
          f"{[s.name for s in subjects[0][3]]}; G_c per subject {gc:.2f} s (not in the figures)")
    variants = [("unbatched", unbatched)] + [(f"B={B}", lambda s, B=B: batched(s, B)) for B in args.batches if B <= n]
    times = {name: [] for name, _ in variants}
    for _ in range(args.repeats):
        for name, f in variants:
            t0 = time.perf_counter()
            f(subjects)
            times[name].append((time.perf_counter() - t0) / n)
    ref = statistics.median(times["unbatched"])
    print(f"{'variant':>10} {'s / subject (median)':>22} {'unbatched / this':>17}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>10} {med:22.3f} {ref / med:17.2f}")


def cohort(args):
    for B in (1, 8):
        out = os.path.join(args.folder, f"bench_cohort_B{B}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["tvb-torchfit", "cohort", os.path.join(args.folder, "cohort.toml"), "--workers", "2", "--quiet",
               "--out", out, "--set", f"cohort.batch={B}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
        wall = time.perf_counter() - t0
        n = len(glob.glob(os.path.join(out, "subjects", "*", "report.json")))
        print(f"{' '.join(cmd)}\n  {n} subjects in {wall:.0f} s: {3600 * n / wall:.0f} subjects per hour")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a synthetic cohort (demos/synthetic_cohort.py --out FOLDER) or a cohort file "
                                   "(.toml; stage fits only)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipe", action="store_true", help="the default recipe's two stages instead of run.toml's")
    ap.add_argument("--cohort", action="store_true", help="also the end-to-end cohort throughput")
    args = ap.parse_args(argv)
    if args.cohort and args.folder.endswith(".toml"):
        ap.error("--cohort needs a synthetic cohort folder (its cohort.toml is run twice, with fresh output folders)")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    stage_fits(args)
    if args.cohort:
        cohort(args)


if __name__ == "__main__":
    sys.exit(main())
