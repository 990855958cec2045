"""A cohort on Dask distributed (``tvb-torchfit cohort cohort.toml``): one task per subject, each running the
config-file pipeline (``pipeline.run_fit``, fit + TVB validation) into the subject's own run folder, then the
summary (``cohort_summary``) read back from the folders.

    cohort = load_cohort("cohort.toml", out="cohorts/hcp7")
    run_cohort(cohort)                                     # an embedded LocalCluster sized to this machine
    run_cohort(cohort, scheduler="tcp://10.0.0.1:8786")    # a running Dask cluster (dask scheduler / dask worker)

What is not lost, and how:

* each subject's results are written by the worker that fitted it, atomically (the pipeline's writers); a worker
  holds an exclusive lock on its subject's folder (``fcntl.flock`` on ``RUN_DIR/.lock``) while it works, and a
  subject is one task with a unique folder name, so no two workers write one folder;
* a rerun skips subjects whose run folder is complete (``report.json`` and ``fit_done.json`` of the same resolved
  config, and a task record ``cohort_task.json`` saying ``ok``) and submits the others, whose runs resume (finished
  stages and validations kept, the running stage from its fit checkpoint);
* a worker that dies mid-subject loses only that subject's unsaved step: the scheduler reschedules the task on
  another worker (``distributed.scheduler.allowed-failures`` = ``cohort.retries`` on the embedded cluster; for
  a running cluster set it on its scheduler), where the run resumes;
* a subject whose run raises (bad data, a fit that fails) is recorded as ``failed`` with its message, and the
  others go on; a subject whose workers died more than ``retries`` times is recorded the same way.

Batching (``[cohort] batch = B`` > 1): subjects whose run configs have linear stages only (and the same stage names)
are fitted B at a time in one task (``fit_group``: ``pipeline.fit_runs_batch``, one batched pass per optimiser step
for those with the same node count, dt and TR), holding the locks of all B folders and writing each folder exactly
as ``run_fit`` does; each subject's TVB validation is then a task of its own (``validate_subject``). A subject whose
data are bad fails alone; a worker killed during a group loses that group's unsaved fits (the task is retried; the
stages already written are kept); the record's ``wall_s`` is the subject's share of the group's fit time plus its
validation.

Each worker runs one subject at a time with torch on ``torch_threads`` threads (``torch.set_num_threads``;
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` set in the embedded cluster's worker
processes before they start).
"""
import contextlib
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import MissingExtraError, ParameterError
from ..progress import bar as progress_bar
from . import folder as fs
from .cohort_config import Cohort, SubjectTask
from .cohort_summary import TASK_RECORD, read_record, subject_row, write_summary
from .config import config_to_dict

DASK_INSTALL_HINT = 'pip install "tvb_torchfit[cohort]"'
LOCK_FILE = ".lock"
RUNS_LOG = "cohort_runs.json"            # one entry per `tvb-torchfit cohort` call: what it fitted, what it skipped


def _dask():
    try:
        import dask
        import distributed
    except ImportError as err:
        raise MissingExtraError(f"cohorts run on Dask distributed, an optional extra: {DASK_INSTALL_HINT} "
                                f"({err}).") from None
    return dask, distributed


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                   # pragma: no cover (not Linux)
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------ worker side
@contextlib.contextmanager
def folder_lock(run_dir: Path):
    """An exclusive lock on a run folder for as long as a worker writes it (released when its process dies)."""
    import fcntl
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def fit_subject(task: SubjectTask) -> Dict:
    """Fit and validate one subject into its run folder (the worker's task); returns its task record. Errors of
    the run are recorded (``status = "failed"``, ``error``), not raised."""
    import torch
    from .pipeline import run_fit
    torch.set_num_threads(task.torch_threads)
    run_dir = Path(task.run_dir)
    with folder_lock(run_dir):
        record = read_record(run_dir) or {"subject": task.name, "attempts": []}
        attempt = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                   "torch_threads": torch.get_num_threads()}
        record["attempts"].append(attempt)
        record.update(status="running", error=None)
        fs.write_json(run_dir / TASK_RECORD, record)
        t0 = time.perf_counter()
        log_file = open(run_dir / "log.txt", "a")
        try:
            run_fit(task.load(), run_dir, progress=False, log=lambda msg: print(msg, file=log_file, flush=True))
            record.update(status="ok", error=None)
        except Exception as err:                                  # recorded: the cohort goes on
            record.update(status="failed", error=f"{type(err).__name__}: {err}")
        finally:
            log_file.close()
        attempt["wall_s"] = record["wall_s"] = time.perf_counter() - t0
        fs.write_json(run_dir / TASK_RECORD, record)
    return record


def _start_attempt(task: SubjectTask, torch_threads: int, stage: str) -> Dict:
    """The subject's task record with a new attempt, status ``running``, written."""
    run_dir = Path(task.run_dir)
    record = read_record(run_dir) or {"subject": task.name, "attempts": []}
    attempt = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
               "torch_threads": torch_threads, "part": stage}
    record["attempts"].append(attempt)
    record.update(status="running", error=None)
    fs.write_json(run_dir / TASK_RECORD, record)
    return record


def fit_group(tasks: List[SubjectTask]) -> Dict[str, Dict]:
    """Fit a group of linear-only subjects together (``pipeline.fit_runs_batch``: one batched pass per stage) into
    their run folders, holding every folder's lock; returns their task records by name, status ``fitted`` (the
    validation, ``validate_subject``, is a task of its own) or ``failed`` with the error of that subject alone."""
    import torch
    from .pipeline import fit_runs_batch
    torch.set_num_threads(tasks[0].torch_threads)
    records: Dict[str, Dict] = {}
    with contextlib.ExitStack() as stack:
        for t in sorted(tasks, key=lambda t: t.run_dir):            # one order everywhere: no deadlock
            stack.enter_context(folder_lock(Path(t.run_dir)))
        logs = [stack.enter_context(open(Path(t.run_dir) / "log.txt", "a")) for t in tasks]
        cfgs, errors = [], {}
        for t in tasks:
            records[t.name] = _start_attempt(t, torch.get_num_threads(), "fit (batched)")
        t0 = time.perf_counter()
        for k, t in enumerate(tasks):
            try:
                cfgs.append(t.load())
            except Exception as err:
                errors[k] = err
        ok = [k for k in range(len(tasks)) if k not in errors]
        results = fit_runs_batch(cfgs, [tasks[k].run_dir for k in ok], progress=False,
                                 logs=[lambda msg, f=logs[k]: print(msg, file=f, flush=True) for k in ok])
        errors.update({k: e for k, e in zip(ok, results) if e is not None})
        share = (time.perf_counter() - t0) / len(tasks)             # the group's fit time, shared out
        for k, t in enumerate(tasks):
            rec = records[t.name]
            err = errors.get(k)
            rec.update(status="failed" if err else "fitted", error=f"{type(err).__name__}: {err}" if err else None)
            rec["attempts"][-1]["wall_s"] = rec["fit_wall_s"] = share
            rec["wall_s"] = share
            fs.write_json(Path(t.run_dir) / TASK_RECORD, rec)
    return records


def validate_subject(task: SubjectTask, fitted: Dict[str, Dict]) -> Dict:
    """TVB's validation of a subject fitted by ``fit_group`` (``pipeline.validate_run``); its task record, status
    ``ok`` or ``failed``. A subject whose fit failed keeps its record."""
    import torch
    from .pipeline import validate_run
    if fitted[task.name]["status"] != "fitted":
        return fitted[task.name]
    torch.set_num_threads(task.torch_threads)
    run_dir = Path(task.run_dir)
    with folder_lock(run_dir):
        record = _start_attempt(task, torch.get_num_threads(), "validation")
        t0 = time.perf_counter()
        with open(run_dir / "log.txt", "a") as log_file:
            try:
                validate_run(run_dir, log=lambda msg: print(msg, file=log_file, flush=True))
                record.update(status="ok", error=None)
            except Exception as err:
                record.update(status="failed", error=f"{type(err).__name__}: {err}")
        wall = time.perf_counter() - t0
        record["attempts"][-1]["wall_s"] = wall
        record["wall_s"] = record.get("fit_wall_s", 0.0) + wall
        fs.write_json(run_dir / TASK_RECORD, record)
    return record


def batch_groups(tasks: List[SubjectTask], batch: int) -> Tuple[List[List[SubjectTask]], List[SubjectTask]]:
    """(groups of up to ``batch`` subjects whose run configs have linear stages only and the same stage names, the
    other subjects one by one). Node counts, dt and TR are matched in the worker (``pipeline.fit_runs_batch``)."""
    from .pipeline import linear_only
    if batch <= 1:
        return [], list(tasks)
    by_stages: Dict[tuple, List[SubjectTask]] = {}
    single = []
    for t in tasks:
        cfg = t.load()
        if linear_only(cfg):
            by_stages.setdefault(tuple(s.name for s in cfg.stages), []).append(t)
        else:
            single.append(t)
    groups = [ts[i:i + batch] for ts in by_stages.values() for i in range(0, len(ts), batch)]
    return groups, single


# ------------------------------------------------------------------------------------------------ client side
def is_complete(task: SubjectTask) -> bool:
    """The subject's run folder holds a finished, validated run of its resolved config, recorded as ``ok``."""
    d = Path(task.run_dir)
    rec = read_record(d)
    if rec is None or rec.get("status") != "ok" or not all((d / f).is_file() for f in
                                                           ("report.json", "fit_done.json", "config.json")):
        return False
    return fs.read_json(d / "config.json") == config_to_dict(task.load())


def _quiet_worker_plugin(distributed):
    """A Dask worker plugin of the embedded cluster: the worker's own INFO lines (each task, each close) off."""
    class QuietWorker(distributed.WorkerPlugin):
        def setup(self, worker) -> None:
            logging.getLogger("distributed").setLevel(logging.ERROR)
    return QuietWorker()


@contextlib.contextmanager
def dask_client(scheduler: Optional[str] = None, workers: Optional[int] = None, torch_threads: int = 1,
                retries: int = 3):
    """A Dask ``Client``: of the running cluster at ``scheduler``, or of an embedded ``LocalCluster`` of
    ``workers`` processes (default: the machine's cores // ``torch_threads``), one task at a time each."""
    dask, distributed = _dask()
    if scheduler is not None:
        with distributed.Client(scheduler, timeout="30s") as client:
            yield client
        return
    if workers is None:
        workers = max(1, machine_cores() // torch_threads)
    threads = str(torch_threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.ERROR)                            # the scheduler's INFO lines, in this process
    with dask.config.set({"distributed.scheduler.allowed-failures": retries,
                          "distributed.worker.daemon": False}):      # validation.processes > 1 forks in a worker
        try:
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                          dashboard_address=None, env=env, silence_logs=logging.ERROR) as cluster, \
                    distributed.Client(cluster) as client:
                client.register_plugin(_quiet_worker_plugin(distributed))
                yield client
        finally:
            quiet.setLevel(level)


def _failed_record(task: SubjectTask, err: BaseException) -> Dict:
    """The record of a subject the cluster could not run (its workers died more often than allowed)."""
    rec = read_record(task.run_dir) or {"subject": task.name, "attempts": []}
    rec.update(status="failed", error=f"{type(err).__name__}: {err}")
    fs.write_json(Path(task.run_dir) / TASK_RECORD, rec)
    return rec


def _log_run(out: Path, entry: Dict) -> None:
    path = out / RUNS_LOG
    runs = fs.read_json(path) if path.is_file() else []
    fs.write_json(path, runs + [entry])


def run_cohort(cohort: Cohort, *, scheduler: Optional[str] = None, workers: Optional[int] = None,
               progress: bool = True, log: Callable[[str], None] = print) -> List[Dict]:
    """Fit every subject of ``cohort`` not yet complete, one Dask task each (module docstring); write the
    summary. Returns the summary rows (one per subject, in the cohort's order)."""
    if workers is not None and workers < 1:
        raise ParameterError(f"workers={workers}: expected a positive number of worker processes.")
    out = Path(cohort.out)
    out.mkdir(parents=True, exist_ok=True)
    fs.write_json(out / "cohort.json", cohort.to_dict())
    todo = [t for t in cohort.tasks if not is_complete(t)]
    skipped = [t.name for t in cohort.tasks if t not in todo]
    log(f"cohort {cohort.name!r}: {len(cohort.tasks)} subjects, {len(skipped)} complete, {len(todo)} to fit")
    entry = {"started": time.time(), "submitted": [t.name for t in todo], "skipped": skipped,
             "scheduler": scheduler or "LocalCluster"}
    t0 = time.perf_counter()
    if todo:
        _, distributed = _dask()
        torch_threads = todo[0].torch_threads
        with dask_client(scheduler, workers, torch_threads, cohort.retries) as client:
            token = uuid.uuid4().hex[:8]
            groups, single = batch_groups(todo, cohort.batch)
            futures = {client.submit(fit_subject, t, key=f"fit-{cohort.name}-{t.name}-{token}", pure=False,
                                     retries=cohort.retries): t for t in single}
            for i, group in enumerate(groups):
                fitted = client.submit(fit_group, group, key=f"fit-group-{cohort.name}-{i}-{token}", pure=False,
                                       retries=cohort.retries)
                futures.update({client.submit(validate_subject, t, fitted, key=f"validate-{cohort.name}-{t.name}-"
                                              f"{token}", pure=False, retries=cohort.retries): t for t in group})
            entry["batched"] = [[t.name for t in g] for g in groups]
            bar = progress_bar(len(todo), "subjects", "subject", disable=not progress)
            failed = 0
            try:
                for fut in distributed.as_completed(futures):
                    task = futures[fut]
                    try:
                        rec = fut.result()
                    except Exception as err:                       # e.g. KilledWorker: its workers kept dying
                        rec = _failed_record(task, err)
                    failed += rec["status"] != "ok"
                    bar.update(1)
                    bar.set_postfix(failed=failed, last=task.name)
                    if rec["status"] != "ok":
                        log(f"subject {task.name!r} failed: {rec['error']}")
            finally:
                bar.close()
                for fut in futures:
                    fut.cancel()
    entry["wall_s"] = time.perf_counter() - t0
    _log_run(out, entry)
    rows = [subject_row(t.name, t.run_dir) for t in cohort.tasks]
    paths = write_summary(out, cohort.name, rows)
    ok = sum(r["status"] == "ok" for r in rows)
    log(f"{ok} of {len(rows)} subjects fitted in {entry['wall_s']:.0f} s; summary: "
        + ", ".join(str(p) for p in paths.values()))
    return rows
