"""The `automl` command. Formats typed errors as one line and exits with code 2."""

from __future__ import annotations

import time

_STARTED = time.time()  # before heavy imports: the budget covers them too

import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import wraps  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from automl.errors import AutoMLError  # noqa: E402

logger = logging.getLogger("automl")


def _out_console() -> Any:
    """stdout console; wide when piped so tables are not squeezed into 80 columns."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


DB_HELP = "SQLite store file (default: ./automl.db)."


def _process_start() -> float:
    """When this process started (interpreter start-up counts against the budget).

    Linux: from /proc (10 ms resolution; psutil's create_time rests on the boot time in
    whole seconds, up to a second early, which cost the trials that second). Elsewhere:
    psutil when installed, else the moment this module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        started = time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
        if 0.0 <= _STARTED - started < 60.0:  # sane: before this import, not long before
            return started
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return min(_STARTED, psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - psutil is optional; fall back to import time
        return _STARTED


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Typed errors → one line on stderr and exit code 2, no traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutoMLError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not verbose:
        for noisy in ("transformers", "sentence_transformers", "ray", "optuna", "filelock"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="automl")
def main(verbose: int) -> None:
    """Fine-tune pretrained text models on your labeled data within a wall-clock budget."""
    _setup_logging(verbose)


def _study_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """DATA and the options of a study, shared by `automl run` and `automl submit`."""
    options = [
        click.argument("data", type=click.Path()),
        click.option("--label", help="Label column (auto-detected when omitted)."),
        click.option("--text", multiple=True, help="Text column(s); repeat to join several."),
        click.option("--task", type=click.Choice(["classification", "regression"]), default=None),
        click.option(
            "--budget", default="5m", show_default=True, help="Hard wall-clock limit: 90s, 5m, 1h."
        ),
        click.option(
            "--trials", type=int, default=None, help="Stop after N trials (default: budget)."
        ),
        click.option("--space", type=click.Path(dir_okay=False), help="Search space YAML file."),
        click.option("--backbone", multiple=True, help="Restrict backbones (repeatable)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--db", default="automl.db", show_default=True, help=DB_HELP),
        click.option(
            "--track",
            type=click.Choice(["auto", "fewshot", "finetune"]),
            default="auto",
            show_default=True,
            help="auto: few-shot (SetFit, frozen-body heads) for few examples per class, "
            "else fine-tuning.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@_study_options
@click.option("--out", default="runs", show_default=True, help="Folder for run outputs.")
@click.option("--ray-address", default=None, help="Connect to an existing Ray cluster.")
@click.option("--cpus", type=int, default=None, help="CPUs for local Ray (default: all).")
@_friendly
def run(
    data: str,
    label: str | None,
    text: tuple[str, ...],
    task: str | None,
    budget: str,
    trials: int | None,
    space: str | None,
    backbone: tuple[str, ...],
    seed: int,
    db: str,
    out: str,
    ray_address: str | None,
    cpus: int | None,
    track: str,
) -> None:
    """Search models for DATA within --budget (fine-tuning, or few-shot for few examples
    per class); export the best one. DATA is a CSV/TSV/JSONL/Parquet table of texts (or
    of image paths), or a folder of images with one sub-folder per class."""
    from rich.console import Console

    from automl.config import Budget

    parsed = Budget.parse(budget)
    if trials is not None and trials < 1:
        raise click.BadParameter("must be at least 1", param_hint="--trials")
    from automl.pipeline import RunOptions
    from automl.pipeline import run as run_pipeline
    from automl.progress import RichListener, leaderboard_table

    console = Console(stderr=True)
    listener = RichListener(console)
    options = RunOptions(
        data=data,
        label=label,
        text=text or None,
        task=task,
        budget=parsed,
        max_trials=trials,
        space=space,
        backbones=backbone or None,
        seed=seed,
        db=db,
        out=out,
        ray_address=ray_address,
        num_cpus=cpus,
        started_at=_process_start(),
        track=track,
    )
    try:
        result = run_pipeline(options, listener)
    finally:
        listener.close()
    metric = "macro_f1" if result.data.task == "classification" else "rmse"
    out_console = _out_console()
    title = f"study {result.study_id}"
    if result.route is not None:
        title += f" · {result.route.reason}"
    out_console.print(leaderboard_table(result.leaderboard, metric, title))
    ref = result.reference.test_metrics.get(metric)
    test = result.test_metrics.get(metric)
    if test is not None:
        line = f"test {metric}: {test:.4f}"
        if ref is not None:
            kind = "pixels+LR" if result.data.modality == "image" else "TF-IDF"
            line += f" ({kind} reference {ref:.4f}, margin {test - ref:+.4f})"
        out_console.print(line)
    out_console.print(f"wall time {result.wall_s:.1f}s of a {parsed} budget")
    out_console.print(f"best model: {result.best_model_dir}")


@main.command()
@click.argument("study", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@_friendly
def leaderboard(study: str | None, fmt: str, db: str) -> None:
    """Show a study's trials, best first (default: the latest study)."""
    from automl.errors import StoreError
    from automl.store import Store

    with Store(db) as store:
        study = study or store.latest_study_id()
        if study is None:
            raise StoreError(f"{db} holds no study yet: run `automl run DATA --label COL` first")
        info = store.get_study(study)
        rows = store.leaderboard(study)
    if fmt == "json":
        keys = (
            "rank",
            "trial_id",
            "number",
            "status",
            "track",
            "params",
            "metrics",
            "epochs_done",
            "seconds",
            "error",
            "is_best",
        )
        out = [{"id": r.get("trial_id"), **{k: r.get(k) for k in keys}} for r in rows]
        click.echo(json.dumps(out, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        mkeys = sorted({k for r in rows for k in (r.get("metrics") or {})})
        writer.writerow(
            ["rank", "trial", "status", "track", "seconds", "epochs", *mkeys, "params"]
        )
        for r in rows:
            m = r.get("metrics") or {}
            writer.writerow(
                [
                    r.get("rank"),
                    r.get("number"),
                    r.get("status"),
                    r.get("track"),
                    r.get("seconds"),
                    r.get("epochs_done"),
                    *[m.get(k) for k in mkeys],
                    json.dumps(r.get("params")),
                ]
            )
        click.echo(buf.getvalue(), nl=False)
    else:
        from automl.progress import leaderboard_table

        title = f"study {study} · {info.get('dataset')} · {info.get('status')}"
        route = (info.get("options") or {}).get("route")
        if route:
            title += f" · {route}"
        _out_console().print(leaderboard_table(rows, info.get("metric") or "macro_f1", title))


@main.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("data", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="CSV to write (default: stdout).")
@click.option(
    "--text",
    multiple=True,
    help="Text column(s), or an image model's path column (default: the model's).",
)
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP + " (unused)")
@_friendly
def predict(model_dir: str, data: str, out: str | None, text: tuple[str, ...], db: str) -> None:
    """Predict DATA with an exported model: a CSV with a `prediction` column (plus one
    probability column per class). For an image model DATA is a folder of images (class
    sub-folders optional) or a table of image paths; each row keeps its image path, and
    an unreadable image gets an `error` instead of a prediction."""
    from automl.predict import predict_file

    result = predict_file(model_dir, data, out, list(text) or None)
    if out is None:
        click.echo(result.to_csv(index=False), nl=False)
    else:
        click.echo(f"wrote {len(result)} predictions to {out}", err=True)


@main.group()
def assets() -> None:
    """Prepare the offline pretrained backbones."""


@assets.command("fetch")
@click.option("--all", "include_large", is_flag=True, help="Also the large rung (mpnet-base).")
@click.option("--force", is_flag=True, help="Rebuild even when already prepared.")
@click.option(
    "--datasets",
    "with_data",
    is_flag=True,
    help="Also the benchmark datasets, text and image (downloads).",
)
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP + " (unused)")
@_friendly
def assets_fetch(include_large: bool, force: bool, with_data: bool, db: str) -> None:
    """Prepare backbones S and M (and L with --all) and the image backbone (MobileNetV2)
    into the asset cache; with --datasets
    also the benchmark datasets: text (SpamAssassin, MR, CoNLL-2010) as clean CSVs,
    checksummed, and images (digits, Fashion-MNIST) as folders of PNGs, one per class
    (`automl bench run` prepares the ones its suite needs by itself)."""
    from automl import backbones

    if with_data:
        from automl.datasets import fetch_datasets
        from automl.datasets.images import fetch_image_datasets

        for name, path in fetch_datasets() + fetch_image_datasets():
            click.echo(f"dataset {name:<16} ready  {path}")
    names = [n for n, b in backbones.BACKBONES.items() if include_large or b.rung != "L"]
    for name in names:
        t0 = time.time()
        path = backbones.prepare(name, force=force)
        click.echo(
            f"{backbones.BACKBONES[name].label:<24} ready in {time.time() - t0:4.1f}s  {path}"
        )
    from automl.vision import backbones as image_backbones

    for name in image_backbones.IMAGE_BACKBONES:  # ImageNet CNNs for image datasets
        t0 = time.time()
        path = image_backbones.prepare(name, force=force)
        click.echo(f"{name + ' (image)':<24} ready in {time.time() - t0:4.1f}s  {path}")


@assets.command("list")
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP + " (unused)")
@_friendly
def assets_list(db: str) -> None:
    """List the backbone registries (text and image) and the image datasets, and what is
    prepared."""
    from automl import backbones
    from automl.datasets import images

    for row in backbones.describe():
        state = "ready" if row["prepared"] else "not prepared"
        click.echo(
            f"{row['name']:<12} {row['rung']}  {row['params_millions']:>6.1f}M  "
            f"{row['layers']:>2} layers  {state:<12} {row['description']}"
        )
    from automl.vision import backbones as image_backbones

    for row in image_backbones.describe():
        state = "ready" if row["prepared"] else "not prepared"
        click.echo(
            f"{row['name']:<12} image {row['params_millions']:>4.1f}M  "
            f"{row['blocks']:>2} blocks  {state:<12} {row['description']}"
        )
    for row in images.describe():
        state = "ready" if row["prepared"] else "not prepared"
        click.echo(
            f"{row['name']:<14} images {row['images']:>6,}  {row['size']:>5}  "
            f"{row['classes']:>2} classes  {state:<12} {row['description']}"
        )


@main.group()
def bench() -> None:
    """Benchmark suites: automl beside strong baselines on fixed splits, same wall budget."""


@bench.command("list")
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@_friendly
def bench_list(db: str) -> None:
    """List the suites (benchmarks/suites/*.yaml) and the benchmark runs in the store."""
    from pathlib import Path

    from automl.bench.runner import estimate_s, plan
    from automl.bench.suites import list_suites, load_suite
    from automl.config import Budget
    from automl.store import Store

    for name in list_suites():
        suite = load_suite(name)
        cells = plan(suite)
        budgets = ", ".join(str(Budget(b)) for b in suite.budgets)
        click.echo(
            f"{name:<8} {len(suite.variants())} datasets × budgets {budgets} × "
            f"{len(suite.seeds)} seeds × {len(suite.systems)} systems: {len(cells)} cells, "
            f"about {estimate_s(cells) / 3600:.1f} h"
        )
    if not Path(db).exists():
        click.echo(f"no benchmark runs yet ({db} does not exist)")
        return
    with Store(db) as store:
        runs = store.list_bench_runs(limit=20)
    for r in runs:
        click.echo(
            f"{r['id']}  {r['status']:<8} {r['done']}/{r['cells']} cells  "
            f"budget {r['budget'] or 'of the suite'}  {r['report_dir'] or ''}"
        )


@bench.command("run")
@click.option("--suite", "suite_name", required=True, help="Suite name or YAML path.")
@click.option("--budget", default=None, help="One budget for every cell instead of the suite's.")
@click.option("--run-id", default=None, help="Resume (or create) this run.")
@click.option("--new", is_flag=True, help="Start a new run instead of resuming one.")
@click.option("--retry-failed", is_flag=True, help="Rerun failed and unavailable cells.")
@click.option("--max-cells", type=int, default=None, help="Stop after N cells (resumable).")
@click.option("--dry-run", is_flag=True, help="Print the cells and an estimate; run nothing.")
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@click.option("--work", default="runs/bench", show_default=True, help="Folder for cell files.")
@click.option("--out", default=None, help="Report folder (default: WORK/RUN/report).")
@_friendly
def bench_run(
    suite_name: str,
    budget: str | None,
    run_id: str | None,
    new: bool,
    retry_failed: bool,
    max_cells: int | None,
    dry_run: bool,
    db: str,
    work: str,
    out: str | None,
) -> None:
    """Run every (dataset, budget, seed, system) cell of a suite, each system under the
    same wall budget, storing each result; finished cells are skipped when run again.
    Writes a report folder (CSV, markdown summary, plot)."""
    from automl.bench.runner import estimate_s, plan, run_suite
    from automl.bench.suites import load_suite
    from automl.config import Budget

    suite = load_suite(suite_name)
    if budget is not None:
        suite = suite.with_budget(Budget.parse(budget).seconds)
    if max_cells is not None and max_cells < 1:
        raise click.BadParameter("must be at least 1", param_hint="--max-cells")
    if dry_run:
        cells = plan(suite)
        for c in cells:
            click.echo(f"{c.dataset:<20} {Budget(c.budget_s)!s:>5} seed {c.seed}  {c.system}")
        click.echo(f"{len(cells)} cells, about {estimate_s(cells) / 60:.0f} min", err=True)
        return
    import signal

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # the running cell's process is killed, the run resumable

    signal.signal(signal.SIGTERM, _stop)
    result = run_suite(
        suite,
        db,
        budget=budget,
        run_id=run_id,
        new=new,
        work_dir=work,
        report_dir=out,
        retry_failed=retry_failed,
        max_cells=max_cells,
        log=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"run {result.run_id}: {result.done} of {result.cells} cells done "
        f"({result.ran} run now); report: {result.report_dir}"
    )


@bench.command("report")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--out", default=None, help="Report folder (default: the run's own).")
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@_friendly
def bench_report(run_id: str | None, out: str | None, db: str) -> None:
    """Write the report of benchmark run RUN (default: the latest): results.csv,
    summary.md (scaled scores, average ranks) and scores_vs_budget.png."""
    from pathlib import Path

    from automl.bench.report import MD_NAME, write_report
    from automl.errors import StoreError
    from automl.store import Store

    with Store(db) as store:
        if run_id is None:
            runs = store.list_bench_runs(limit=1)
            if not runs:
                raise StoreError(
                    f"{db} holds no benchmark run yet: run `automl bench run --suite smoke`"
                )
            run_id = str(runs[0]["id"])
        run = store.get_bench_run(run_id)
        target = Path(out or run["report_dir"] or Path("runs/bench") / run_id / "report")
        write_report(run, store.bench_results(run_id), target)
        store.finish_bench_run(run_id, run["status"], str(target))
    click.echo(f"report of {run_id}: {target / MD_NAME}")


@main.command()
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@click.option("--limit", type=int, default=20, show_default=True)
@_friendly
def studies(db: str, limit: int) -> None:
    """List recent studies."""
    from automl.store import Store

    with Store(db) as store:
        for s in store.list_studies(limit):
            test = (s.get("test_metrics") or {}).get(s.get("metric") or "", None)
            shown = f"{test:.4f}" if isinstance(test, int | float) else "–"
            click.echo(f"{s['id']}  {s['status']:<9}  {s.get('metric')}={shown}  {s['dataset']}")


@main.command()
@_study_options
@_friendly
def submit(
    data: str,
    label: str | None,
    text: tuple[str, ...],
    task: str | None,
    budget: str,
    trials: int | None,
    space: str | None,
    backbone: tuple[str, ...],
    seed: int,
    track: str,
    db: str,
) -> None:
    """Validate DATA (the same checks as `automl run`), queue it as a job for the workers
    and print the job id. `automl worker` runs it; `automl jobs` shows it."""
    from automl.config import Budget
    from automl.jobs import JobOptions
    from automl.jobs import submit as submit_job

    if trials is not None and trials < 1:
        raise click.BadParameter("must be at least 1", param_hint="--trials")
    job_id, checked = submit_job(
        data,
        JobOptions(
            label=label,
            text=text or None,
            task=task,
            track=track,
            max_trials=trials,
            seed=seed,
            space=str(os.path.abspath(space)) if space else None,
            backbones=backbone or None,
        ),
        Budget.parse(budget),
        db,
    )
    for line in checked.report.lines():
        click.echo(f"  {line}", err=True)
    click.echo(
        f"queued {job_id} ({budget}); run `automl worker --db {db}` to process it", err=True
    )
    click.echo(job_id)


@main.command()
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@click.option("--out", default="runs", show_default=True, help="Folder for run outputs.")
@click.option("--once", is_flag=True, help="Run at most one job, then exit.")
@click.option("--max-jobs", type=int, default=None, help="Exit after N jobs.")
@click.option("--lease", type=float, default=15.0, show_default=True, help="Lease seconds.")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Idle poll seconds.")
@click.option("--cpus", type=int, default=None, help="CPUs for local Ray (default: all).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@_friendly
def worker(
    db: str,
    out: str,
    once: bool,
    max_jobs: int | None,
    lease: float,
    poll: float,
    cpus: int | None,
    quiet: bool,
) -> None:
    """Claim queued jobs from the store and run them, one at a time. Several workers may
    share a store; a job whose worker died is resumed by the next one."""
    from automl.worker import Worker, WorkerSettings

    # the root logger is at WARNING without -v: a worker tells what it does at INFO
    logger.setLevel(logging.WARNING if quiet else min(logger.getEffectiveLevel(), logging.INFO))
    w = Worker(
        WorkerSettings(
            db=db,
            out=out,
            lease_s=lease,
            heartbeat_s=min(2.0, lease / 4),
            poll_s=poll,
            num_cpus=cpus,
        )
    )
    try:
        n = w.run(once=once, max_jobs=max_jobs)
    except KeyboardInterrupt:
        click.echo(f"worker {w.name} interrupted", err=True)
        sys.exit(130)
    click.echo(f"worker {w.name}: {n} job(s) run", err=True)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@_friendly
def jobs(fmt: str, limit: int, db: str) -> None:
    """List the service's jobs, newest first, with their progress."""
    from automl.jobs import progress
    from automl.store import Store

    out: list[dict[str, Any]] = []
    with Store(db) as store:
        for job in store.list_jobs(limit=limit):
            p = progress(job, store)
            out.append(
                {
                    **{
                        k: job.get(k)
                        for k in (
                            "id",
                            "status",
                            "source_name",
                            "budget_s",
                            "spent_s",
                            "attempts",
                            "worker",
                            "study_id",
                            "error",
                            "created_at",
                            "finished_at",
                        )
                    },
                    "cancel_requested": bool(job.get("cancel_requested")),
                    "trials_done": p.trials_done,
                    "best": p.best,
                    "metric": p.metric,
                    "used_s": round(p.used_s, 1),
                }
            )
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"jobs in {db}")
    for col in ("job", "status", "file", "used / budget s", "trials", "best", "study", "error"):
        table.add_column(col)
    for j in out:
        best = f"{j['metric']} {j['best']:.4f}" if j["best"] is not None else "–"
        status = str(j["status"])
        if j["cancel_requested"] and status == "running":
            status += " (cancelling)"
        table.add_row(
            str(j["id"]),
            status,
            str(j["source_name"] or ""),
            f"{j['used_s']:.0f} / {j['budget_s']:.0f}",
            str(j["trials_done"]),
            best,
            str(j["study_id"] or ""),
            str(j["error"] or "")[:80],
        )
    _out_console().print(table)


@main.command()
@click.argument("job")
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@_friendly
def cancel(job: str, db: str) -> None:
    """Cancel JOB: a queued job at once; a running one stops its trials within seconds and
    keeps the trials and the best model found so far."""
    from automl.jobs import cancel as cancel_job

    row = cancel_job(job, db)
    if row["status"] == "cancelled":
        click.echo(f"{job} cancelled")
    else:
        click.echo(f"{job}: cancel requested; its worker stops it within seconds")


@main.command()
@click.option("--db", default="automl.db", show_default=True, help=DB_HELP)
@click.option("--port", type=int, default=8501, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--workers", type=int, default=1, show_default=True, help="Workers to start.")
@click.option("--out", default="runs", show_default=True, help="Folder for run outputs.")
@_friendly
def app(db: str, port: int, host: str, workers: int, out: str) -> None:
    """Open the Streamlit app on the store (localhost by default) with N workers that run
    the jobs submitted from it. Ctrl+C stops them all."""
    import signal
    import subprocess
    from pathlib import Path

    if workers < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--workers")
    app_path = Path(__file__).resolve().parent.parent / "app.py"
    env = {**os.environ, "AUTOML_DB": db}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "automl.cli", "worker", "--db", db, "--out", out, "-q"],
            env=env,
        )
        for _ in range(workers)
    ]
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # no reloading on file changes: the watcher walked the whole folder, .venv too
        "--server.fileWatcherType",
        "none",
        "--",
        "--db",
        db,
    ]
    click.echo(
        f"automl app on http://{host}:{port} (store {db}, {workers} worker(s)); Ctrl+C to stop",
        err=True,
    )
    ui = subprocess.Popen(cmd, env=env)

    def _forward(signum: int, _frame: Any) -> None:
        for p in [ui, *procs]:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    code = 0
    try:
        code = ui.wait()
    except KeyboardInterrupt:
        _forward(signal.SIGINT, None)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in [ui, *procs]:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    sys.exit(code)


def entry() -> None:
    """The console script. Runs `main`, flushes every stream, then leaves without the
    interpreter's teardown of torch, transformers and Ray (about 0.7 s on 2 cores): the
    budget of `automl run` counts until the process ends, and by then the study is
    committed, the store closed and the model folder written."""
    code: int = 0
    try:
        main(standalone_mode=True)
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:  # sys.exit("message"): Python prints it, exits 1
            click.echo(exc.code, err=True)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
