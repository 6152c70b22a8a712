"""The dashboard in a real headless Chromium: sign in with a token, see the list, open a running job,
watch its progress and its sample grid change without a reload, cancel it, see it cancelled.

The job is driven by this test through the store's own functions, as a worker would: it claims the
job (its attempt is the lease token), records progress and metric points, writes each fixed-noise
grid as an object plus its artifact row, and, once it reads the cancel request, ends the job
`cancelled`."""

from __future__ import annotations

import struct
import time
import zlib

import pytest

from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.accounts import Caller

pytestmark = pytest.mark.browser

UPDATE_MS = 15_000
# The colour of the grid picture's first pixel, as the browser decoded it.
PIXEL = """() => {
  const img = document.getElementById("grid"), canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  return Array.from(ctx.getImageData(0, 0, 1, 1).data.slice(0, 3));
}"""  # the page polls every 2-3 s; a loaded 2-core machine may take a few rounds


def png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A `size`x`size` PNG of one colour (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


class FakeWorker:
    """Does to one job what a worker's JobContext does, through the same store calls."""

    def __init__(self, service: Service, job_id: str) -> None:
        self.service, self.job_id = service, job_id
        with service._session() as s:
            claimed = db.claim_job(s, job_id, worker=db.worker_name(), lease_seconds=120)
            assert claimed is not None
            self.token = claimed.attempt

    def train_to(self, step: int, *, grid: tuple[int, int, int]) -> None:
        key = keys.samples_key(self.job_id, step)
        data = png(32, grid)
        self.service.objects.put_bytes(key, data)
        with self.service._session() as s:
            for at in range(max(step - 9, 1), step + 1):
                values = {"loss_D": 1.4 - at / 100, "loss_G": 0.7 + at / 100, "images_per_sec": 500.0 + at}
                db.record_metrics(s, self.job_id, step=at, values=values, token=self.token)
            db.add_artifact(s, self.job_id, key=key, kind="samples", size=len(data), token=self.token)
            db.heartbeat(s, self.job_id, step=step, token=self.token)

    def wait_for_cancel(self, timeout: float = 20) -> None:
        """Heartbeat until the cancel request is read, then end the job as a worker does."""
        deadline = time.monotonic() + timeout
        while True:
            with self.service._session() as s:
                if db.heartbeat(s, self.job_id, token=self.token):
                    db.finish_job(s, self.job_id, state="cancelled", token=self.token)
                    return
            assert time.monotonic() < deadline, "the dashboard's cancel never reached the job"
            time.sleep(0.2)


def test_sign_in_watch_a_running_job_and_cancel_it(server, browser) -> None:
    from playwright.sync_api import expect

    base, app = server
    service: Service = app.state.service
    token = service.create_token("alice").token
    job_id = (
        service.scoped(Caller("alice")).submit_train("dcgan", dataset="digits", image_size=16, steps=100).id
    )
    other = service.scoped(Caller("bob")).submit_train("dcgan", dataset="digits", image_size=16, steps=100).id
    worker = FakeWorker(service, job_id)
    worker.train_to(10, grid=(255, 0, 0))

    page = browser.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    # Signing in: any page leads to the form; the token leads back to the list.
    page.goto(base + "/")
    expect(page).to_have_url(f"{base}/signin?next=/")
    page.fill("#token", "gty_not-a-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("unknown, expired or revoked")
    page.fill("#token", token or "")
    page.click("button[type=submit]")
    expect(page).to_have_url(base + "/")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("10/100")
    expect(page.locator(f'tr[data-job="{other}"]')).to_have_count(0)  # bob's job is not listed

    # The list follows the job without a reload.
    page.evaluate("window.notReloaded = true")
    worker.train_to(15, grid=(255, 0, 0))
    expect(row).to_contain_text("15/100", timeout=UPDATE_MS)
    assert page.evaluate("window.notReloaded") is True

    # The job's page: its progress and grid, then both change as the job goes on.
    page.click(f'a[href="/jobs/{job_id}"]')
    expect(page).to_have_url(f"{base}/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("running")
    expect(page.locator("#job-steps")).to_have_text("15/100")
    expect(page.locator("#grid")).to_have_attribute(
        "src", f"/v1/jobs/{job_id}/artifacts/{keys.samples_key(job_id, 15)}?v={len(png(32, (255, 0, 0)))}"
    )
    page.wait_for_function(
        "() => { const g = document.getElementById('grid'); return g.complete && g.naturalWidth > 0; }"
    )
    assert page.evaluate(PIXEL) == [255, 0, 0]
    expect(page.locator("canvas.chart")).not_to_have_count(0)  # the curves, drawn from the metrics
    page.evaluate("window.notReloaded = true")
    worker.train_to(40, grid=(0, 0, 255))
    expect(page.locator("#job-steps")).to_have_text("40/100", timeout=UPDATE_MS)
    expect(page.locator("#grid-caption")).to_contain_text("step 40", timeout=UPDATE_MS)
    assert keys.samples_key(job_id, 40) in (page.locator("#grid").get_attribute("src") or "")
    assert page.evaluate("window.notReloaded") is True
    # The picture itself, read through GET /v1/jobs/{id}/artifacts/{key} with the session cookie.
    page.wait_for_function(
        "() => { const g = document.getElementById('grid'); return g.complete && g.naturalWidth > 0; }"
    )
    assert page.evaluate(PIXEL) == [0, 0, 255]

    # Cancel: the request reaches the job, whose worker ends it; the page shows it ended.
    page.click("form.cancel button")
    expect(page).to_have_url(f"{base}/jobs/{job_id}")
    worker.wait_for_cancel()
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=UPDATE_MS)
    expect(page.locator("form.cancel")).to_have_count(0)
    assert service.get(job_id).state == "cancelled"
    page.goto(base + "/?state=cancelled")
    expect(page.locator(f'tr[data-job="{job_id}"]')).to_contain_text("cancelled")
    assert script_errors == []
