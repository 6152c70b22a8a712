"""The `gantry` command line: a thin layer over `gantry.api.service`.

Exit codes (README.md, "Commands"): 0 done; 1 the job failed or was cancelled; 2 bad input; 3 no such job;
4 a service is unreachable; 5 the API refused the token (GANTRY_API_TOKEN).

With GANTRY_API_URL set, the job commands go to that `gantry serve` over HTTP (gantry.api.client) with
the same output; the operator's commands (token, db, requeue, worker, demo) always act where they run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gantry.api import follow
from gantry.api.client import HttpService
from gantry.api.console import Output, reader_gone, stdout_gone
from gantry.api.datacmd import data
from gantry.api.schemas import JobView, LogLine
from gantry.api.service import Service, unavailable
from gantry.jobs.datasets import DATASETS
from gantry.jobs.errors import GantryError, InvalidInput, ServiceUnavailable
from gantry.jobs.settings import Settings, get_settings
from gantry.jobs.specs import MODELS, CodeWalk, EvaluateSpec, SampleSpec
from gantry.jobs.store import KINDS, STATES, TERMINAL

out = Output(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class GantryGroup(click.Group):
    """Turns gantry's errors into their exit codes and one clear line on stderr; so too a service
    that stops answering in the middle of a command (exit 4, never a traceback). A reader of the
    output that went away ends the command quietly (gantry.api.console)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GantryError as exc:
            _exit_with(exc)
        except Exception as exc:
            if isinstance(exc, BrokenPipeError) and stdout_gone():  # `gantry logs ID | head -1`
                reader_gone()
            down = unavailable(exc, ctx.obj) if isinstance(ctx.obj, Settings) else None
            if down is None:
                raise
            _exit_with(down)


def _exit_with(exc: GantryError) -> None:
    err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, soft_wrap=True)
    sys.exit(exc.exit_code)


@click.group(cls=GantryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """gantry: train and sample GANs as jobs.

    Without GANTRY_BROKER_URL a job runs in this process (embedded mode); with it, the job is
    queued on Redis for `gantry worker` processes. With GANTRY_API_URL (and GANTRY_API_TOKEN), the
    job commands go to that `gantry serve` instead.
    """
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = get_settings()


def _service(ctx: click.Context, *, end_dead: bool = False) -> Service | HttpService:
    """The service for a job command: the API at GANTRY_API_URL when it is set, else the store this
    machine's settings name. `end_dead`: first end the jobs that an embedded gantry process on this
    host left `running` when it was killed (submit, list, status and watch do this)."""
    settings: Settings = ctx.find_root().obj
    if settings.api_url:
        return HttpService.from_settings(settings)
    return _local(ctx, end_dead=end_dead)


def _local(ctx: click.Context, *, end_dead: bool = False, note: str | None = None) -> Service:
    """The service on the store this machine's settings name, whatever GANTRY_API_URL says (the
    operator's commands, `note` naming the command, run where the database is)."""
    settings: Settings = ctx.find_root().obj
    if note:
        _note_store_only(settings, note)
    svc = Service(settings)
    if end_dead:
        for job_id in svc.end_dead_embedded_jobs():
            err.print(
                f"job {job_id}: the gantry process running it was killed; ended failed "
                f"(`gantry resume {job_id}` continues it from its last checkpoint)"
            )
    return svc


def _note_store_only(settings: Settings, command: str) -> None:
    """An operator's command with GANTRY_API_URL set: say which store it acts on (never the API's,
    unless this machine's settings name the same database)."""
    if settings.api_url:
        from gantry.jobs.store import describe_url

        err.print(
            f"note: `gantry {command}` acts on the database this machine's settings name "
            f"({describe_url(settings.database)}), not through GANTRY_API_URL: run it where the service's "
            "database is",
            soft_wrap=True,
        )


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput("set", f"{pair!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


# --- submitting ------------------------------------------------------------------------------

_WAIT = click.option("--wait", is_flag=True, help="Wait for the job to end; exit 1 if it fails.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _labels(command: Any) -> Any:
    """`--name` and `--tag`, which every submitting command takes."""
    command = click.option(
        "--tag",
        "tags",
        multiple=True,
        metavar="TAG",
        help="A tag to find the job by (`list --tag`); repeat for several. Letters, digits and _ . : -",
    )(command)
    return click.option("--name", help="A name for the job, shown by status and list.")(command)


def _after_submit(
    ctx: click.Context, svc: Service | HttpService, job: JobView, *, wait: bool, as_json: bool
) -> None:
    settings: Settings = ctx.obj
    if settings.embedded and isinstance(svc, Service):
        if not as_json:
            out.print(f"{job.kind} job [bold]{job.id}[/bold] runs in this process (embedded mode)")
        job = _run_embedded(svc, job, show=not as_json)
        _finish(job, as_json=as_json, exit_on_failure=True)
        return
    if not wait:
        if as_json:
            _print_json(job.model_dump(mode="json"))
        else:
            out.print(f"queued {job.kind} job [bold]{job.id}[/bold]; follow it with `gantry watch {job.id}`")
        return
    if not as_json:
        out.print(f"queued {job.kind} job [bold]{job.id}[/bold]")
    job = _watch(svc, job.id, show=not as_json)
    _finish(job, as_json=as_json, exit_on_failure=True)


def _run_embedded(svc: Service, job: JobView, *, show: bool) -> JobView:
    """Run the job in a thread and show its progress from the store. Ctrl-C cancels it: it stops
    at its next step with a checkpoint; a second Ctrl-C ends it `cancelled` at once. An unreachable
    service ends it `failed` and raises ServiceUnavailable (exit 4)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            svc.run_embedded(job)
        except BaseException as exc:  # reported below, after the progress display ends
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"gantry-job-{job.id}", daemon=True)
    thread.start()
    try:
        _watch(svc, job.id, show=show, alive=thread.is_alive)
    except KeyboardInterrupt:
        err.print(
            f"interrupted: cancelling job {job.id}; it stops at its next step with a checkpoint "
            "(Ctrl-C again to stop at once, without one)"
        )
        svc.cancel(job.id)
        try:
            thread.join()
        except KeyboardInterrupt:
            svc.stop_now(job.id)
            err.print(f"job {job.id} cancelled without a final checkpoint")
            sys.exit(1)
    thread.join()
    if failure:
        raise failure[0]  # a GantryError: the job is already ended, with the reason
    return svc.get(job.id)


def _finish(job: JobView, *, as_json: bool, exit_on_failure: bool) -> None:
    if as_json:
        _print_json(job.model_dump(mode="json"))
    else:
        _print_status(job)
    if exit_on_failure and job.state != "succeeded":
        sys.exit(1)


def _shown(text: str, default: Any) -> str:
    """Help text with its default, as click's `show_default` writes it."""
    return f"{text}  [default: {default}]"


def _train_default(name: str) -> str:
    """The default of train field `name`: the most models' value, and each other model's."""
    by_model = {model: spec.model_fields[name].default for model, spec in MODELS.items()}
    usual = Counter(by_model.values()).most_common(1)[0][0]
    others = ", ".join(f"{model}: {value}" for model, value in by_model.items() if value != usual)
    return f"{usual}; {others}" if others else str(usual)


@cli.command()
@click.argument("model", type=click.Choice(sorted(MODELS)))
@click.option(
    "--dataset",
    help=_shown(
        f"Built-in ({', '.join(DATASETS)}), a path, or a file:// or s3:// URI.", _train_default("dataset")
    ),
)
@click.option(
    "--steps", type=int, help=_shown("Training steps (generator updates).", _train_default("steps"))
)
@click.option("--batch-size", type=int, help=_shown("Images per minibatch.", _train_default("batch_size")))
@click.option(
    "--image-size",
    type=int,
    help=_shown("Side in pixels; each model says which it takes.", _train_default("image_size")),
)
@click.option("--seed", type=int, help=_shown("The same seed gives the same run.", _train_default("seed")))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="A model option, e.g. lr=2e-4.")
@click.option(
    "--checkpoint-every",
    type=int,
    help=_shown("Steps between checkpoints.", _train_default("checkpoint_every")),
)
@click.option(
    "--sample-every", type=int, help=_shown("Steps between sample grids.", _train_default("sample_every"))
)
@click.option(
    "--init-from",
    metavar="JOB_ID",
    help="Start from train job JOB_ID's G and D weights (fine-tuning); the architecture must match.",
)
@_labels
@_WAIT
@_JSON
@click.pass_context
def train(
    ctx: click.Context, model: str, sets: tuple[str, ...], wait: bool, as_json: bool, **fields: Any
) -> None:
    """Train MODEL. Model options: `gantry options MODEL`."""
    svc = _service(ctx, end_dead=True)
    job = svc.submit_train(model, options=_parse_sets(sets), **fields)
    _after_submit(ctx, svc, job, wait=wait, as_json=as_json)


# A model trained with codes: read z's codes between two values another way than the train job's.
_CODE_WALK = click.option(
    "--code-walk",
    type=click.Choice(get_args(CodeWalk)),
    help="For a model trained with codes: how G reads z's codes between two values on walks and arithmetic "
    "(see its code_walk in `gantry options MODEL`).  [default: as trained]",
)
_SAMPLE = SampleSpec.model_fields
_CHECKPOINT_HELP = _shown(
    "latest, best (by the eval metric, with eval_every) or a step number.", _SAMPLE["checkpoint"].default
)


@cli.command()
@click.argument("job_id")
@click.option("--checkpoint", help=_CHECKPOINT_HELP)
@click.option("--count", type=int, help=_shown("How many images (per prompt).", _SAMPLE["count"].default))
@click.option(
    "--seed", type=int, help=_shown("The same seed gives the same images.", _SAMPLE["seed"].default)
)
@click.option(
    "--format",
    "format",
    type=click.Choice(["png", "npz", "tar"]),
    help=_shown(
        "Plain samples as a PNG each, or in shards of 10,000: npz (uint8 arrays) or tar (the PNGs).",
        _SAMPLE["format"].default,
    ),
)
@click.option("--interpolate", metavar="SEED_A:SEED_B", help="Walk the latent space between two seeds.")
@click.option(
    "--frames",
    type=int,
    help=_shown("Frames of --interpolate, endpoints included.", _SAMPLE["frames"].default),
)
@click.option(
    "--linear", "interpolation", flag_value="linear", help="Interpolate linearly.  [default: spherical]"
)
@click.option(
    "--arithmetic", metavar="EXPR", help='Latent arithmetic on averaged seeds: "3,17,42 - 5,8 + 11,12".'
)
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    help='A caption to draw, or label values for a model trained with labels ("large red circle"); '
    "repeat for several.",
)
@click.option(
    "--input",
    "input",
    metavar="PATH|URI",
    help="Image, folder or S3 prefix to super-resolve (super-resolution models).",
)
@_CODE_WALK
@_labels
@_WAIT
@_JSON
@click.pass_context
def sample(ctx: click.Context, job_id: str, wait: bool, as_json: bool, **fields: Any) -> None:
    """Sample from train job JOB_ID's checkpoint: images, interpolations, arithmetic, prompts."""
    svc = _service(ctx, end_dead=True)
    job = svc.submit_sample(job_id, **fields)
    _after_submit(ctx, svc, job, wait=wait, as_json=as_json)


@cli.command()
@click.argument("job_id")
@click.option("--checkpoint", help=_CHECKPOINT_HELP)
@click.option("--metric", "metrics", multiple=True, help="A metric to compute.  [default: all that apply]")
@click.option(
    "--seed", type=int, help=_shown("Seeds the metric's samples.", EvaluateSpec.model_fields["seed"].default)
)
@click.option(
    "--samples",
    type=int,
    help=_shown(
        "Generated images for fid, kid, inception_score and precision_recall.",
        EvaluateSpec.model_fields["samples"].default,
    ),
)
@_CODE_WALK
@_labels
@_WAIT
@_JSON
@click.pass_context
def evaluate(ctx: click.Context, job_id: str, wait: bool, as_json: bool, **fields: Any) -> None:
    """Measure train job JOB_ID's checkpoint; the values land on both jobs' metrics."""
    svc = _service(ctx, end_dead=True)
    job = svc.submit_evaluate(job_id, **fields)
    _after_submit(ctx, svc, job, wait=wait, as_json=as_json)


@cli.command()
@click.argument("model", type=click.Choice(sorted(MODELS)))
@_JSON
@click.pass_context
def options(ctx: click.Context, model: str, as_json: bool) -> None:
    """List MODEL's `--set` options: default, allowed values and meaning, architecture first."""
    from dataclasses import asdict

    from gantry.jobs.specs import option_help

    svc = _service(ctx)
    rows = svc.option_help(model) if isinstance(svc, HttpService) else option_help(model)
    if as_json:  # as GET /v1/models lists them
        _print_json([asdict(row) for row in rows])
        return
    table = Table(box=None)
    # Names and defaults are what users type: never cut or wrapped; the meaning wraps.
    table.add_column("option", no_wrap=True, min_width=max(len(row.name) for row in rows))
    table.add_column("default", no_wrap=True)
    table.add_column("allowed")
    table.add_column("meaning", ratio=1)
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            table.add_row(f"[bold]{section}[/bold]", "", "", "")
        table.add_row(row.name, escape(row.default), escape(row.allowed), escape(row.meaning))
    out.print(table)


# --- reading ---------------------------------------------------------------------------------


def _print_status(job: JobView) -> None:
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}.get(
        job.state, ""
    )
    state = f"[{colour}]{job.state}[/{colour}]" if colour else job.state
    out.print(f"[bold]{job.id}[/bold]  {job.kind} {job.model}  {state}  attempt {job.attempt}")
    if job.name:
        out.print(f"  name       {escape(job.name)}")
    if job.tags:
        out.print(f"  tags       {', '.join(job.tags)}")
    out.print(f"  progress   {job.progress.step}/{job.progress.total_steps}")
    if job.parent_job_id:
        out.print(f"  from job   {job.parent_job_id}")
    for label, moment in (
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
    ):
        if moment is not None:
            out.print(f"  {label:<10} {moment:%Y-%m-%d %H:%M:%S} UTC")
    if job.metrics:
        out.print("  metrics    " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(job.metrics.items())))
    if job.error:
        out.print(f"  [red]error[/red]      {job.error.splitlines()[0]}")
    # What to look at: an evaluation's figures (the walks it measured, a scatter plot) too.
    shown = [
        a for a in job.artifacts if a.kind in ("grid", "checkpoint", "manifest", "evaluation", "warnings")
    ]
    samples = [a for a in job.artifacts if a.kind == "samples"]
    images = [a for a in job.artifacts if a.kind == "image"]
    if samples:
        shown.append(samples[-1])
    for a in shown:
        out.print(f"  {a.kind:<10} {a.uri}")
    if images:
        out.print(f"  images     {len(images)} under {images[0].uri.rsplit('/', 1)[0]}/")


@cli.command()
@click.argument("job_id")
@_JSON
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job: state, progress, latest metrics, artifacts."""
    job = _service(ctx, end_dead=True).get(job_id)
    if as_json:
        _print_json(job.model_dump(mode="json"))
    else:
        _print_status(job)


@cli.command(name="list")
@click.option("--state", type=click.Choice(STATES))
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--model", type=click.Choice(sorted(MODELS)))
@click.option("--tag", help="Only jobs with this tag.")
@click.option("--parent", metavar="JOB_ID", help="Only the sample and evaluate jobs of this train job.")
@click.option("--since", metavar="DATE", help="Created on or after (ISO date or time, UTC unless it says).")
@click.option("--until", metavar="DATE", help="Created before (a date: up to the end of that day).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", help="The next page: the cursor a previous `list` printed.")
@_JSON
@click.pass_context
def list_(ctx: click.Context, limit: int, cursor: str | None, as_json: bool, **filters: Any) -> None:
    """List jobs, newest first, a page at a time (the next page's command goes to stderr)."""
    page = _service(ctx, end_dead=True).list_jobs(limit=limit, cursor=cursor, **filters)
    if as_json:
        _print_json([j.model_dump(mode="json", exclude={"artifacts"}) for j in page.jobs])
    else:
        table = Table(box=None)
        for column in ("id", "kind", "model", "state", "progress", "created (UTC)"):
            # What users type, and the date and time: never cut or folded over two lines.
            table.add_column(column, no_wrap=column in ("id", "state", "created (UTC)"))
        table.add_column("name / tags", overflow="fold", min_width=12)
        for j in page.jobs:
            table.add_row(
                j.id,
                j.kind,
                j.model,
                j.state,
                f"{j.progress.step}/{j.progress.total_steps}",
                f"{j.created_at:%Y-%m-%d %H:%M}",
                escape(" ".join(filter(None, [j.name, " ".join(f"#{t}" for t in j.tags)]))),
            )
        out.print(table)
    if page.next_cursor:
        given = {**filters, "limit": limit if limit != 50 else None}
        again = "".join(f" --{k} {shlex.quote(str(v))}" for k, v in given.items() if v is not None)
        again += " --json" if as_json else ""
        err.print(f"more jobs: gantry list{escape(again)} --cursor {page.next_cursor}", soft_wrap=True)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Every recorded point.")
@click.pass_context
def metrics(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """A job's metrics: latest, min and max of each."""
    points = _service(ctx).metrics(job_id)
    if as_json:
        _print_json([p.model_dump(mode="json") for p in points])
        return
    table = Table("metric", "latest", "at step", "min", "max", "points", box=None)
    by_name: dict[str, list[Any]] = {}
    for p in points:
        by_name.setdefault(p.name, []).append(p)
    for name, series in sorted(by_name.items()):
        values = [p.value for p in series]
        table.add_row(
            name,
            f"{values[-1]:.4g}",
            str(series[-1].step),
            f"{min(values):.4g}",
            f"{max(values):.4g}",
            str(len(values)),
        )
    out.print(table if by_name else "no metrics recorded yet")


DEAD_HOLDER_CHECK_SECONDS = 5.0


def _display(*, show: bool, json_lines: bool = False) -> follow.Display:
    """How to show a job as it goes (gantry.api.follow): JSON lines, a bar on a terminal, plain
    lines at a steady pace without one, or nothing."""
    if json_lines:
        return follow.JsonLines(click.echo)
    if not show:
        return follow.Quiet()
    if out.is_terminal and err.is_terminal:
        return follow.Bar(err)
    return follow.Plain(err)


def _outage(exc: ServiceUnavailable, since: float | None, patience: float) -> float:
    """When the outage `exc` belongs to began (now, at its first failure: `since` None), for a
    follower that waits it out; `exc` is raised once the outage has lasted over `patience` seconds."""
    now = time.monotonic()
    if since is not None and now - since > patience:
        raise exc
    return now if since is None else since


def _watch(
    svc: Service | HttpService,
    job_id: str,
    *,
    show: bool,
    alive: Any = None,
    interval: float = 0.5,
    display: follow.Display | None = None,
) -> JobView:
    """Poll the store until the job ends, showing it as it goes (`display`; default: a bar on a
    terminal, plain lines without one). An outage of the database that lasts longer than the
    lease (GANTRY_LEASE_SECONDS) raises ServiceUnavailable; a shorter one is shown and waited out."""
    job = svc.get(job_id)
    with display or _display(show=show) as shown:
        if isinstance(svc, HttpService):
            for job, down in svc.follow_job(job_id):
                if down is not None:
                    shown.unreachable(job, down.service)
                else:
                    shown.update(job)
            return job
        down_since: float | None = None
        looked_for_dead = time.monotonic()
        while True:
            try:
                job = svc.get(job_id)
            except ServiceUnavailable as exc:
                down_since = _outage(exc, down_since, svc.settings.lease_seconds)
                shown.unreachable(job, exc.service)
                time.sleep(interval)
                continue
            down_since = None
            shown.update(job)
            if job.state in TERMINAL or (alive is not None and not alive()):
                return job if job.state in TERMINAL else svc.get(job_id)
            # A job that another gantry process runs here in embedded mode ends if that process is
            # killed while this one watches: look for that now and then.
            if alive is None and time.monotonic() - looked_for_dead > DEAD_HOLDER_CHECK_SECONDS:
                with contextlib.suppress(ServiceUnavailable):  # waited out by the next read
                    svc.end_dead_embedded_jobs()
                looked_for_dead = time.monotonic()
            time.sleep(interval)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one per state, progress or metric change.")
@click.pass_context
def watch(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Follow a job live until it ends; exit 1 if it failed or was cancelled. Without a terminal,
    progress is plain lines every 10 s or 10% of the steps."""
    if as_json:
        lines = follow.JsonLines(click.echo)
        job = _watch(_service(ctx, end_dead=True), job_id, show=True, display=lines)
        lines.end(job)
        sys.exit(0 if job.state == "succeeded" else 1)
    job = _watch(_service(ctx, end_dead=True), job_id, show=True)
    _finish(job, as_json=False, exit_on_failure=True)


@cli.command()
@click.argument("job_id")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new lines until the job ends.")
@_JSON
@click.pass_context
def logs(ctx: click.Context, job_id: str, follow_: bool, as_json: bool) -> None:
    """A job's log: its own lines and every infrastructure error it met (retries, lost leases,
    skipped checkpoints, its final error), recorded on the job by its workers. With --follow, an
    outage of the database (or the API) shorter than the lease is waited out once the job was
    read, as `watch` does (one unreachable from the start exits 4 at once)."""
    settings: Settings = ctx.find_root().obj
    svc = _service(ctx)
    last: int | None = None
    read = False
    down_since: float | None = None
    while True:
        try:
            # Whether it had ended is read before its lines, so the lines its end wrote are printed.
            ended = not follow_ or svc.get(job_id).state in TERMINAL
            lines = svc.logs(job_id, since_id=last)
        except ServiceUnavailable as exc:
            if not follow_ or not read:
                raise
            if down_since is None:
                err.print(f"{exc.service} unreachable, retrying", markup=False)
            down_since = _outage(exc, down_since, settings.lease_seconds)
            time.sleep(1.0)
            continue
        read, down_since = True, None
        for line in lines:
            last = line.id
            _print_log_line(line, as_json=as_json)
        if ended:
            return
        time.sleep(1.0)


def _print_log_line(line: LogLine, *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(line.model_dump(mode="json")))
        return
    colour = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}.get(line.level)
    level = f"[{colour}]{line.level:<7}[/{colour}]" if colour else f"{line.level:<7}"
    out.print(f"{line.time:%Y-%m-%d %H:%M:%S} #{line.attempt} {level} {escape(line.message)}")


@cli.command()
@click.argument("job_id")
@_JSON
@click.pass_context
def cancel(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Cancel a queued or running job (a running one stops within seconds, keeping its checkpoints;
    one whose worker is gone is cancelled at once)."""
    job = _service(ctx).cancel(job_id)
    if as_json:
        _print_json(job.model_dump(mode="json"))
    elif job.state == "cancelled":
        out.print(f"job {job.id} cancelled" + (f" ({job.error})" if job.error else ""))
    else:
        out.print(f"job {job.id}: cancel requested; it stops at its next progress check")


@cli.command()
@click.argument("job_id")
@click.option(
    "--steps",
    type=int,
    help="A train job's new total steps: more than its last checkpoint's step.  [default: as submitted]",
)
@_WAIT
@_JSON
@click.pass_context
def resume(ctx: click.Context, job_id: str, steps: int | None, wait: bool, as_json: bool) -> None:
    """Run a failed or cancelled job again (attempt + 1); a train job continues from its last checkpoint."""
    svc = _service(ctx, end_dead=True)
    job = svc.resume(job_id, steps=steps)
    _after_submit(ctx, svc, job, wait=wait, as_json=as_json)


@cli.command()
@click.argument("job_id")
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path), help="Default: ./<job_id>")
@_JSON
@click.pass_context
def download(ctx: click.Context, job_id: str, to: Path | None, as_json: bool) -> None:
    """Copy a job's objects (checkpoints, samples, images, metrics) to a local folder."""
    paths = _service(ctx).download(job_id, to or Path(job_id))
    if as_json:
        _print_json([str(p) for p in paths])
        return
    for p in paths:
        out.print(str(p))
    out.print(f"{len(paths)} files in {to or Path(job_id)}")


@cli.command()
@click.argument("job_id")
@click.option("--recursive", is_flag=True, help="Also delete the sample and evaluate jobs made from it.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@_JSON
@click.pass_context
def delete(ctx: click.Context, job_id: str, recursive: bool, yes: bool, as_json: bool) -> None:
    """Delete a finished job: its records, metrics, logs and every object under jobs/JOB_ID/.
    A queued or running job is refused (cancel it first); so is a train job that other jobs were
    made from, unless --recursive."""
    svc = _service(ctx)
    doomed = svc.deletion(job_id, recursive=recursive)
    if not yes:
        what = f"job {job_id}" if len(doomed) == 1 else f"{len(doomed)} jobs ({', '.join(doomed)})"
        if not sys.stdin.isatty():
            raise InvalidInput("yes", f"deleting {what} needs --yes when there is no terminal to ask on")
        click.confirm(f"Delete {what} and all their objects?", abort=True, err=True)
    svc.delete(job_id, recursive=recursive)
    if as_json:
        _print_json({"deleted": doomed})
        return
    for gone in doomed:
        out.print(f"job {gone} deleted")


# --- operating -------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create or upgrade the schema to the version this gantry needs."""
    from gantry.jobs.store import describe_url
    from gantry.migrations import upgrade as run_upgrade

    settings: Settings = ctx.find_root().obj
    _note_store_only(settings, "db upgrade")
    try:
        run_upgrade(settings.database)
    except Exception as exc:
        from gantry.jobs.errors import ServiceUnavailable

        raise ServiceUnavailable(
            "database", f"{describe_url(settings.database)}: {type(exc).__name__}: {exc}"
        ) from None
    out.print(f"database {describe_url(settings.database)} is at the current schema")


@cli.group()
def token() -> None:
    """API accounts: tokens for `gantry serve` (each names an owner; an admin sees every job)."""


@token.command(name="create")
@click.option("--owner", required=True, help="Whose jobs the token submits and sees.")
@click.option("--admin", is_flag=True, help="See and act on every owner's jobs.")
@click.option("--expires", default="90d", show_default=True, help="A duration (90d, 12h, 2w) or never.")
@_JSON
@click.pass_context
def token_create(ctx: click.Context, owner: str, admin: bool, expires: str, as_json: bool) -> None:
    """Create a token and print it once: only its hash is stored."""
    made = _local(ctx, note="token create").create_token(owner, admin=admin, expires=expires)
    if as_json:
        _print_json(made.model_dump(mode="json"))
        return
    # The token alone on stdout, the words around it on stderr: `T=$(gantry token create --owner alice)`.
    until = made.expires_at.strftime("%Y-%m-%d %H:%M UTC") if made.expires_at else "never"
    err.print(f"token {made.id} for {made.owner}{' (admin)' if admin else ''}, expires {until}:")
    click.echo(made.token)
    err.print("[dim]It is shown only now; keep it as GANTRY_API_TOKEN.[/dim]", highlight=False)


@token.command(name="list")
@_JSON
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Every token: id, owner, admin, created, expires, revoked (never the token)."""
    tokens = _local(ctx, note="token list").list_tokens()
    if as_json:
        _print_json([t.model_dump(mode="json") for t in tokens])
        return
    table = Table(box=None)
    for column in ("id", "owner", "admin", "created", "expires", "revoked"):
        table.add_column(column)

    def day(moment: Any) -> str:
        return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"

    for t in tokens:
        table.add_row(
            t.id, t.owner, "yes" if t.admin else "", day(t.created_at), day(t.expires_at), day(t.revoked_at)
        )
    out.print(table)


@token.command(name="revoke")
@click.argument("token_id")
@_JSON
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, as_json: bool) -> None:
    """Revoke token TOKEN_ID (as `gantry token list` shows it): every API process refuses it within
    GANTRY_API_AUTH_CACHE_SECONDS (1 s by default)."""
    revoked = _local(ctx, note="token revoke").revoke_token(token_id)
    if as_json:  # as `gantry token list --json` shows it
        _print_json(revoked.model_dump(mode="json"))
        return
    out.print(f"token {revoked.id} of {revoked.owner} is revoked")


@cli.command()
@click.option("--stale", is_flag=True, help="First queue again the running jobs whose lease ran out.")
@_JSON
@click.pass_context
def requeue(ctx: click.Context, stale: bool, as_json: bool) -> None:
    """Rebuild the queue from the store: send every queued job's message that is not on the queue."""
    done = _local(ctx, note="requeue").requeue(stale=stale)
    if as_json:
        _print_json({"stale": done.stale, "sent": done.sent, "waiting": done.waiting})
        return
    for job_id in done.stale:
        out.print(f"job {job_id}: its lease ran out; queued again")
    for job_id in done.sent:
        out.print(f"job {job_id}: message sent")
    waiting = "" if done.waiting is None else f"; {done.waiting} already on the queue"
    out.print(f"{len(done.sent)} sent{waiting}")


@cli.command()
@click.option(
    "--gpus",
    default="all",
    show_default=True,
    help="all, none, or device ids like 0,1: one worker process per GPU.",
)
@click.option("--queues", default="gantry.gpu", show_default=True)
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, gpus: str, queues: str, loglevel: str) -> None:
    """Run a Celery worker that takes jobs from the queue (needs GANTRY_BROKER_URL)."""
    from gantry.api.workers import run_workers

    sys.exit(run_workers(ctx.obj, gpus=gpus, queues=queues, loglevel=loglevel))


@cli.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one)."
)
@click.option("--port", default=8000, type=click.IntRange(1, 65535), show_default=True)
@click.option(
    "--workers",
    "api_workers",
    default=1,
    type=click.IntRange(1, 64),
    show_default=True,
    help="API (uvicorn) processes. Jobs run in `gantry worker` processes, not these.",
)
@click.option(
    "--worker/--no-worker",
    "with_worker",
    default=None,
    help="Start a `gantry worker` beside the API. Default: only without GANTRY_BROKER_URL, where "
    "it takes the jobs from the local queue.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="uvicorn's line per request on stderr (off: less work per request under heavy load).",
)
@click.pass_context
def serve(
    ctx: click.Context, host: str, port: int, api_workers: int, with_worker: bool | None, access_log: bool
) -> None:
    """Run the HTTP API (docs/api.md). Alone, a whole service on this machine: SQLite, file storage
    and a worker beside it; with GANTRY_BROKER_URL, the API of a queued deployment."""
    from gantry.api.serve import run_serve

    sys.exit(
        run_serve(
            ctx.obj,
            host=host,
            port=port,
            api_workers=api_workers,
            with_worker=with_worker,
            echo=click.echo,
            access_log=access_log,
        )
    )


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Train the demo (a DCGAN on `shapes`) on this machine, sample 64 images, print where everything is."""
    from gantry.api.demo import run_demo

    run_demo(ctx.obj, out)


cli.add_command(data)  # gantry data inspect (gantry.api.datacmd)


def main() -> None:
    cli(prog_name="gantry")


if __name__ == "__main__":
    main()
