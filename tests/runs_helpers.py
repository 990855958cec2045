"""A tiny own-data run for the tests of tvb_torchfit.runs: 5 regions, CSV/NPY files, short fits and validations."""
import textwrap

import numpy as np

N = 5


def write_data(folder, n=N, volumes=240, seed=0):
    """SC, tract lengths, labels (left/right pairs) and a BOLD (time x regions) with some shared structure."""
    rng = np.random.RandomState(seed)
    w = rng.uniform(0.1, 1.0, (n, n))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0)
    lengths = rng.uniform(5.0, 30.0, (n, n))
    lengths = (lengths + lengths.T) / 2
    np.fill_diagonal(lengths, 0)
    common = rng.standard_normal((volumes, 1))
    bold = 0.6 * common + rng.standard_normal((volumes, n)) + 0.3 * rng.standard_normal((volumes, n)) @ w
    np.savetxt(folder / "sc.csv", w, delimiter=",")
    np.save(folder / "lengths.npy", lengths)
    np.save(folder / "bold.npy", bold)
    (folder / "labels.txt").write_text("\n".join(f"{'lr'[i % 2]}R{i // 2}" for i in range(n)) + "\n")
    np.savetxt(folder / "myelin.csv", np.linspace(0.0, 1.0, n), delimiter=",")
    return folder


CONFIG = """
[run]
name = "tiny"
seed = 3

[data]
weights = "sc.csv"
tract_lengths = "lengths.npy"
bold = "bold.npy"
tr = 720.0

[preprocessing]
homotopic = 0.0

[maps]
fc_gradient_sparsity = 0.0

[validation]
length = 30000.0
discard = 5000.0
fcd_window = 7200.0
fcd_step = 1440.0
seeds = [11, 12]

[[stages]]
name = "global"
fic = "follow"
G = 0.8
[stages.fit]
n_steps = 3
lr = 0.1
stability_margin = 0.001
[stages.params.G]
low = 0.5
high = 0.95
relative = "G_c"

[[stages]]
name = "maps"
fic = "start"
G = 0.85
[stages.fit]
n_steps = 3
lr = 0.05
[stages.params.J_i]
low = 0.05
high = 5.0
maps = ["myelin.csv", "fc_gradient"]
prior = ["start", 0.3]
"""


def write_config(folder, text=CONFIG):
    path = folder / "run.toml"
    path.write_text(textwrap.dedent(text))
    return path


COHORT = """
[cohort]
name = "tiny3"
config = "run.toml"
set = ["validation.length=15000.0", "validation.seeds=[11]", "validation.fcd_window=2880.0",
       "validation.fcd_step=720.0"]
retries = 3

[subjects]
folders = "subjects/sub-*"
[subjects.files]
weights = "sc.csv"
tract_lengths = "lengths.npy"
bold = "bold.npy"
"""


ONE_STAGE = CONFIG[:CONFIG.index('[[stages]]\nname = "maps"')]      # the global stage only: a quick subject


def write_cohort(folder, n_subjects=3, text=COHORT):
    """A cohort of ``n_subjects`` tiny subjects (folders ``subjects/sub-<i>`` with their own SC and BOLD, seeds
    0, 1, ...), the tiny run config (its maps file beside it) and the cohort file; returns the cohort file."""
    write_config(write_data(folder), ONE_STAGE)
    for i in range(n_subjects):
        sub = folder / "subjects" / f"sub-{i}"
        sub.mkdir(parents=True, exist_ok=True)
        write_data(sub, seed=i)
    path = folder / "cohort.toml"
    path.write_text(textwrap.dedent(text))
    return path


BAD_SUBJECT = """
[[subjects.list]]
name = "bad"
weights = "bad/sc.csv"
tract_lengths = "bad/lengths.npy"
bold = "bad/bold.npy"
"""


def write_cohort_with_bad_subject(folder):
    """``write_cohort``'s 3 tiny subjects plus subject "bad" (folder ``bad``) whose BOLD holds a NaN (malformed
    data); returns the cohort file."""
    path = write_cohort(folder, text=COHORT + BAD_SUBJECT)
    (folder / "bad").mkdir()
    bad = write_data(folder / "bad", seed=9)
    arr = np.load(bad / "bold.npy")
    arr[10, 2] = np.nan
    np.save(bad / "bold.npy", arr)
    return path
