"""`gantry data inspect PATH|URI`: look at a folder or .zip of pictures (or an .npz) before training.

The work is the worker's (`gantry.worker.data.inspection`: Pillow and numpy, never torch), reached by
name as embedded mode reaches the worker, so the API's imports stay free of it; a base install
without the worker's packages is told what to install (exit 4).
"""

from __future__ import annotations

import importlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from gantry.api.console import Output
from gantry.jobs.datasets import DATASETS
from gantry.jobs.errors import InvalidInput, ServiceUnavailable
from gantry.jobs.settings import Settings, get_settings
from gantry.jobs.specs.options import parse_colour
from gantry.jobs.storage import fetch_to_local

out = Output(highlight=False, soft_wrap=True)


@click.group()
def data() -> None:
    """Look at a data set before a job trains on it."""


@data.command(name="inspect")
@click.argument("source", metavar="PATH|URI")
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the contact sheet PNG.  [default: NAME-contact.png in the current folder]",
)
@click.option(
    "--image-size", type=click.IntRange(8, 256), default=64, show_default=True, help="Thumbnail side."
)
@click.option("--fit", type=click.Choice(["crop", "pad"]), default="crop", show_default=True,
              help="Thumbnails as training's `fit` makes them.")  # fmt: skip
@click.option(
    "--background", default="white", show_default=True, help="Behind transparent pixels, as `background`."
)
@click.option(
    "--captions-file",
    default="",
    help="The captions sidecar, as `captions_file`.  [default: captions.csv or .jsonl]",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def inspect_data(
    ctx: click.Context,
    source: str,
    sheet: Path | None,
    image_size: int,
    fit: str,
    background: str,
    captions_file: str,
    as_json: bool,
) -> None:
    """Count, sizes, colour modes, formats, sub-folder labels, captions and bad files of the pictures at
    PATH|URI (a folder or .zip, or an .npz), and a contact sheet of thumbnails as training sees them."""
    if source in DATASETS:
        raise InvalidInput("dataset", f"{source} is built in: inspect reads a folder, .zip or .npz")
    try:
        colour = parse_colour(background)
    except ValueError as exc:
        raise InvalidInput("background", str(exc)) from None
    try:
        inspection = importlib.import_module("gantry.worker.data.inspection")
        folders = importlib.import_module("gantry.worker.data.folders")
        limits_module = importlib.import_module("gantry.worker.data.limits")
    except ImportError as exc:
        raise ServiceUnavailable(
            "worker packages",
            f"gantry data inspect reads pictures with Pillow and numpy ({exc.name} is missing): "
            "pip install 'gantry[worker]'",
        ) from None
    settings = ctx.obj if isinstance(ctx.obj, Settings) else get_settings()
    limits = limits_module.DataLimits.from_settings(settings)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", source.rstrip("/").rsplit("/", 1)[-1]).strip("-.") or "data"
    sheet = sheet if sheet is not None else Path.cwd() / f"{Path(name).stem}-contact.png"
    options = folders.ReadOptions(background=colour, fit=fit, captions_file=captions_file)
    with tempfile.TemporaryDirectory(prefix="gantry-inspect-") as scratch:
        path = fetch_to_local(
            source,
            Path(scratch),
            endpoint_url=settings.s3_endpoint_url,
            max_files=limits.max_files,
            max_bytes=limits.max_bytes,
        )
        report = inspection.inspect(
            path, sheet=sheet.resolve(), shown=source, options=options, thumb=image_size, limits=limits
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report.as_dict())


def _size(spread: dict[str, Any]) -> str:
    return f"{_n(spread['min'])} / {_n(spread['median'])} / {_n(spread['max'])}"


def _n(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _print(r: dict[str, Any]) -> None:
    def row(label: str, text: str) -> None:
        out.print(f"  {label:<14} {escape(text)}")

    out.print(f"{escape(r['source'])} ({r['kind']}): {r['count']:,} readable pictures")
    if r["count"]:
        row("width", f"{_size(r['width'])} px (min / median / max)")
        row("height", f"{_size(r['height'])} px")
        row("aspect (w/h)", _size(r["aspect"]))
        row("modes", ", ".join(f"{k} {v:,}" for k, v in r["modes"].items()))
        if r["formats"]:
            row("formats", ", ".join(f"{k} {v:,}" for k, v in r["formats"].items()))
    if r["labels"]:
        top = f"; {r['outside_folders']:,} outside any (no class)" if r["outside_folders"] else ""
        classes = ", ".join(f"{k} {v:,}" for k, v in r["labels"].items())
        row("labels", f"{len(r['labels'])} sub-folders (labels=folder): {classes}{top}")
    elif r["kind"] != "npz":
        row("labels", "no sub-folders: labels=folder has no classes here")
    if r["captions_file"] or r["captioned"]:
        where = f" from {r['captions_file']}" if r["captions_file"] else ""
        row("captions", f"{r['captioned']:,} pictures captioned{where}, {r['uncaptioned']:,} without")
        for example in r["caption_examples"][:3]:
            row("", f"e.g. {example}")
        if r["unmatched_captions"]:
            shown = ", ".join(r["unmatched_captions"][:5])
            row("", f"{len(r['unmatched_captions']):,} captions name no picture: {shown}")
    else:
        row("captions", "none (text2img needs captions.csv or captions.jsonl: file, caption)")
    if r["bad_files"]:
        row(
            "bad files",
            f"{len(r['bad_files']):,}, skipped by training (bad_files=skip; refuse fails the job):",
        )
        for bad in r["bad_files"][:20]:
            row("", bad["problem"])
        if len(r["bad_files"]) > 20:
            row("", f"... and {len(r['bad_files']) - 20:,} more (--json lists all)")
    else:
        row("bad files", "none")
    if r["contact_sheet"]:
        out.print(
            f"contact sheet ({r['sheet_cells']} pictures as training sees them): {escape(r['contact_sheet'])}"
        )
