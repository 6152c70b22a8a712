"""A real train job against the training loop's synthetic rate, at the same batch (issue 30).

    python bench/job_speed.py                                       # CPU: 120 steps, a checkpoint every 60
    python bench/job_speed.py --steps 5000 --checkpoint-every 1000  # a GPU

On private services (PostgreSQL and moto's S3 server, as the chaos suite starts them; the machine's
own are left alone; SQLite where PostgreSQL's server is not installed, which the output says), a dcgan job at 64x64x3 (the paper's size, nz 100, ngf = ndf = 64) trains on a
.npz of 2,048 images in the S3 bucket, read by the worker as a user's data set is; checkpoints and
sample grids every `--checkpoint-every` steps go to S3 and progress to PostgreSQL. The job runs
through the worker's own runner in this process (embedded mode: `Service.run_embedded`), so the
device is this machine's (CUDA when torch sees a GPU).

Beside it, in the same process, bench/dcgan_speed.py's `time_gantry`: the same loop on in-memory
data with every callback a no-op, at the same batch, precision and compile. Printed: the synthetic
rate, the job's training rate (its `images_per_sec` points: the steps alone), its end-to-end rate
(steps x batch over `running` to `succeeded`: data download, checkpoints, grids, progress and the
end included) and their ratios to the synthetic rate. Goal (issue 30): end to end within 10% (exit
status 0 when met, 1 when not).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository, for tests.chaos
sys.path.insert(0, str(ROOT / "bench"))

from tests.chaos.services import S3, Missing, Postgres  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--checkpoint-every", type=int, default=60)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--compile", choices=["auto", "graph", "eager"], default=None, help="CUDA: graph")
    args = parser.parse_args()

    import numpy as np
    import torch
    from dcgan_speed import time_gantry

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compile = args.compile or ("graph" if device.type == "cuda" else "auto")
    workdir = Path(tempfile.mkdtemp(prefix="gantry-job-speed-"))
    s3: S3 | None = None
    postgres: Postgres | None = None
    try:
        s3 = S3(workdir)
        store = "PostgreSQL"
        try:
            postgres = Postgres()
            postgres.start()
            database = postgres.create_database("jobspeed")
        except Missing as missing:  # a machine without PostgreSQL's server programs
            postgres, store = None, f"SQLite (no PostgreSQL here: {missing})"
            database = f"sqlite:///{workdir / 'gantry.db'}"
        s3.client().create_bucket(Bucket="jobspeed")
        images = np.random.default_rng(0).integers(0, 256, size=(2048, 64, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, images=images)
        s3.client().put_object(Bucket="jobspeed", Key="data/images.npz", Body=buffer.getvalue())
        os.environ.update(
            {
                "GANTRY_HOME": str(workdir / "home"),
                "GANTRY_DATABASE_URL": database,
                "GANTRY_STORAGE_URL": "s3://jobspeed/runs",
                "GANTRY_S3_ENDPOINT_URL": s3.direct,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        os.environ.pop("GANTRY_BROKER_URL", None)  # embedded: submitted, not queued; this process runs it
        subprocess.run(
            [sys.executable, "-m", "gantry.api.cli", "db", "upgrade"], check=True, capture_output=True
        )

        from gantry.api.service import Service
        from gantry.jobs.settings import Settings

        svc = Service(Settings())
        job = svc.submit_train(
            "dcgan",
            dataset="s3://jobspeed/data/images.npz",
            image_size=64,
            batch_size=args.batch,
            steps=args.steps,
            checkpoint_every=args.checkpoint_every,
            sample_every=args.checkpoint_every,
            options={"precision": args.precision, "compile": compile},
        )
        state = svc.run_embedded(job)
        view = svc.get(job.id)
        assert state == "succeeded", view.error
        rates = [p.value for p in svc.metrics(job.id) if p.name == "images_per_sec"]
        training = statistics.median(rates[1:] or rates)  # the first window holds the warm-up
        assert view.started_at is not None and view.finished_at is not None
        seconds = (view.finished_at - view.started_at).total_seconds()
        end_to_end = args.steps * args.batch / seconds
        synthetic = time_gantry(args.batch, max(args.steps // 2, 10), device, args.precision, compile)
    finally:
        if s3 is not None:
            s3.stop()
        if postgres is not None:
            postgres.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, batch {args.batch}, "
        f"{args.steps} steps, a checkpoint and grid every {args.checkpoint_every}, precision {args.precision}, "
        f"compile {compile}, store {store}; the job took {seconds:.1f} s"
    )
    print()
    print("| measure | images/s | of synthetic |")
    print("|---|---|---|")
    print(f"| the loop on in-memory data, callbacks off (synthetic) | {synthetic:,.0f} | 1.00 |")
    print(f"| the job's training rate (its images_per_sec) | {training:,.0f} | {training / synthetic:.2f} |")
    print(
        f"| the job end to end (`running` to `succeeded`) | {end_to_end:,.0f} | {end_to_end / synthetic:.2f} |"
    )
    return 0 if end_to_end >= 0.9 * synthetic else 1


if __name__ == "__main__":
    sys.exit(main())
