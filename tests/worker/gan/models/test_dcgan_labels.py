"""AC-GAN's label codes (`--set labels=...`, arXiv 1610.09585) on dcgan: G is conditioned on the data
set's own labels, D's head learns them from real images only, and samples draw the label combinations
the data has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.jobs import keys
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import BUILTIN_LABELS, load_train_spec, parse_sample_spec, parse_train_spec
from gantry.jobs.specs.prompts import parse_label_prompt
from gantry.worker.data import label_space, load_dataset, shapes
from gantry.worker.data.digits import load as load_digits
from gantry.worker.gan.checkpoint import load_checkpoint
from gantry.worker.gan.latent import load_decoder
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.losses import Minibatch
from gantry.worker.gan.registry import build_model

CPU = torch.device("cpu")
NZ = 8


def spec(dataset: str = "digits", **options: Any) -> Any:
    return parse_train_spec(
        "dcgan",
        {"dataset": dataset, "image_size": 16, "batch_size": 32, "steps": 200, "checkpoint_every": 200},
        {"nz": NZ, "ngf": 16, "ndf": 16, "lr": "1e-3", **options},
    )


@pytest.mark.parametrize(
    ("dataset", "labels", "message"),
    [
        ("shapes", "shape,hue", "shapes has no label 'hue'; its labels are shape, colour, size"),
        ("digits", "colour", "digits has no label 'colour'; its labels are digit"),
        ("shapes", "shape,shape", "each label attribute once"),
        ("/tmp/mine.npz", "digit", "has no label attributes gantry knows; built-in data sets with labels"),
    ],
)
def test_labels_the_data_set_lacks_are_rejected_at_submit(dataset: str, labels: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        spec(dataset, labels=labels)
    assert caught.value.field == "set.labels"


def test_labels_read_from_the_command_line_and_back_from_the_store() -> None:
    labelled = spec("shapes", labels="shape, colour", latent_codes="none", info_weight="2")
    assert labelled.options.labels == ("shape", "colour")
    assert load_train_spec(labelled.model_dump(mode="json")) == labelled
    assert spec("shapes", labels="none").options.labels == ()


def test_the_label_table_matches_the_loaders() -> None:
    """`--set labels` is checked against BUILTIN_LABELS without loading data: it must say what the
    loaders give, column for column, and the label space must be exactly what the train split holds."""
    for name, attributes in BUILTIN_LABELS.items():
        data = load_dataset(name, image_size=16)
        assert data.labels is not None
        if data.labels.ndim == 1:
            assert list(attributes.values()) == [[str(d) for d in range(int(data.labels.max()) + 1)]]
        else:
            assert attributes == data.attributes
    data = shapes.generate(16, seed=3)
    assert data.labels is not None
    names = ["colour", "shape"]
    seen = {tuple(row) for row in data.labels[:, [1, 0]].tolist()}
    assert {tuple(row) for row in label_space("shapes", names).tolist()} == seen  # 28 pairs, not 32
    assert len(seen) == 8 * 4 - len(shapes.HELD_OUT_COMBINATIONS)
    assert label_space("shapes", ["size", "background"]).shape == (6, 2)
    assert label_space("stacked-digits", ["red", "blue"]).shape == (100, 2)


def test_latents_carry_the_label_combinations_the_data_has() -> None:
    torch.manual_seed(0)
    m = build_model(spec("shapes", labels="colour,shape", latent_codes="3"), channels=3, device=CPU)
    z = m.sample_latents(4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, NZ + 3 + 8 + 4, 1, 1)
    colour, shape = z[:, NZ + 3 : NZ + 11, 0, 0], z[:, NZ + 11 :, 0, 0]
    assert torch.equal(colour.sum(1), torch.ones(4000)) and torch.equal(shape.sum(1), torch.ones(4000))
    drawn = set(zip(colour.argmax(1).tolist(), shape.argmax(1).tolist(), strict=True))
    assert drawn == {tuple(row) for row in label_space("shapes", ["colour", "shape"]).tolist()}


def _train(s: Any, data: Any) -> tuple[bytes, list[dict[str, float]]]:
    checkpoints: list[bytes] = []
    progress: list[dict[str, float]] = []
    train(
        s,
        data,
        callbacks=Callbacks(
            progress=lambda step, metrics: progress.append(metrics),
            should_stop=lambda: False,
            checkpoint=lambda step, payload: checkpoints.append(payload),
            samples=lambda step, png: None,
        ),
        device=CPU,
        log_every=50,
    )
    return checkpoints[-1], progress


def _nearest_digit_mean() -> Any:
    """A classifier that never saw G's images: the nearest class mean of the real training digits
    (about 91% right on the real ones), uint8 images (N, 16, 16, 1) -> digits (N,)."""
    data = load_digits(16)
    assert data.labels is not None
    real = data.images.reshape(len(data.images), -1).astype(np.float32)
    means = np.stack([real[data.labels == d].mean(0) for d in range(10)])  # (10, 256)

    def classify(images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float32)
        return ((flat[:, None, :] - means[None]) ** 2).sum(2).argmin(1)

    return classify


@pytest.fixture(scope="module")
def digits_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(service, train job id, checkpoint bytes): a real embedded dcgan job on digits with labels=digit."""
    from gantry.api.service import Service
    from gantry.jobs.settings import Settings
    from gantry.migrations import upgrade

    home = tmp_path_factory.mktemp("acgan-home")
    with pytest.MonkeyPatch.context() as env:  # the embedded task reads its settings from the environment
        for var in (
            "GANTRY_DATABASE_URL",
            "GANTRY_STORAGE_URL",
            "GANTRY_BROKER_URL",
            "GANTRY_S3_ENDPOINT_URL",
        ):
            env.delenv(var, raising=False)
        env.setenv("GANTRY_HOME", str(home))
        settings = Settings()
        upgrade(settings.database)
        svc = Service(settings)
        options = {"nz": str(NZ), "ngf": "16", "ndf": "16", "lr": "1e-3", "labels": "digit"}
        job = svc.submit_train(
            "dcgan",
            options=options,
            dataset="digits",
            image_size=16,
            batch_size=32,
            steps=200,
            checkpoint_every=200,
        )
        svc.run_embedded(job)
        assert svc.get(job.id).state == "succeeded"
        checkpoint = svc.objects.get_bytes(keys.checkpoint_key(job.id, 200, attempt=1))
        yield svc, job.id, checkpoint


@pytest.mark.slow
def test_a_head_trained_on_real_digits_sees_the_digit_g_was_asked_for(digits_job: Any) -> None:
    """After 200 steps on digits with labels=digit, a classifier that never saw G's images reads
    most samples as the digit in their label code; the same G with the class term nearly off draws
    codes it ignores (chance, 1/10)."""
    classify = _nearest_digit_mean()

    def agreement(checkpoint: bytes) -> float:
        decoder = load_decoder(checkpoint, device=CPU)
        z = decoder.sample(500, torch.Generator().manual_seed(1))
        asked = z.flatten(1)[:, NZ:].argmax(1).numpy()
        return float((classify(decoder.decode(z)) == asked).mean())

    svc, job_id, checkpoint = digits_job
    metrics = svc.get(job_id).metrics
    assert np.isfinite(list(metrics.values())).all()
    assert metrics["loss_labels"] < 1.0  # D's head learns the real digits (chance: ln 10 = 2.3)
    assert load_checkpoint(checkpoint)["spec"]["options"]["labels"] == ["digit"]
    assert agreement(checkpoint) > 0.6
    faint, _ = _train(spec(labels="digit", info_weight="1e-4"), load_digits(16))
    assert agreement(faint) < 0.3


@pytest.mark.slow
def test_prompts_draw_the_label_values_they_name(digits_job: Any) -> None:
    """`gantry sample JOB --prompt 7 --prompt digit=3 --count 20`: a row per prompt, each image the
    digit asked for; the same seed gives the same files."""
    svc, job_id, _ = digits_job
    job = svc.submit_sample(job_id, prompts=("7", "digit=3"), count=20, seed=5)
    svc.run_embedded(job)
    done = svc.get(job.id)
    assert done.state == "succeeded", done.error
    home = svc.settings.home
    folder = home / "objects" / "jobs" / job.id / "images"
    images = np.stack([np.asarray(Image.open(folder / f"{i:06d}.png")) for i in range(40)])
    drawn = _nearest_digit_mean()(images)
    assert (drawn[:20] == 7).mean() > 0.7 and (drawn[20:] == 3).mean() > 0.7, drawn
    assert (folder / "grid.png").exists() and "digit=3" in (folder / "prompts.json").read_text()
    again = svc.submit_sample(job_id, prompts=("7",), count=2, seed=5)
    svc.run_embedded(again)
    first = (home / "objects" / "jobs" / again.id / "images" / "000000.png").read_bytes()
    assert first == (folder / "000000.png").read_bytes()


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("seven", "'seven' names no label value (digit: 0, 1, 2"),
        ("7 3", "names two values of digit"),
        ("colour=red", "the model's labels are digit"),
    ],
)
def test_bad_prompts_are_refused_before_anything_is_written(digits_job: Any, prompt: str, words: str) -> None:
    svc, job_id, _ = digits_job
    before = len(svc.list_jobs().jobs)
    with pytest.raises(InvalidInput, match=re.escape(words)) as caught:
        svc.submit_sample(job_id, prompts=(prompt,), count=4)
    assert caught.value.field == "prompts"
    assert len(svc.list_jobs().jobs) == before


def test_prompts_name_values_phrases_first() -> None:
    five = ["shape", "colour", "size", "position", "background"]
    assert parse_label_prompt("A large red circle in the top left, on grey", "shapes", five) == {
        "size": 1, "colour": 0, "shape": 0, "position": 0, "background": 1,
    }  # fmt: skip
    assert parse_label_prompt("top", "shapes", five) == {"position": 1}
    assert parse_label_prompt("position=bottom-right cross", "shapes", five) == {"position": 8, "shape": 3}
    with pytest.raises(InvalidInput, match="'large' names no label value"):
        parse_label_prompt("large red circle", "shapes", ["shape", "colour"])
    with pytest.raises(InvalidInput, match="'3' could be red or green or blue: write red=3"):
        parse_label_prompt("3", "stacked-digits", ["red", "green", "blue"])
    assert parse_label_prompt("red=3 blue=1", "stacked-digits", ["red", "green", "blue"]) == {
        "red": 3,
        "blue": 1,
    }


def test_prompts_need_a_model_trained_with_labels() -> None:
    with pytest.raises(InvalidInput, match="only when trained with --set labels"):
        parse_train_spec("dcgan", {}, {}).check_sample(parse_sample_spec({"prompts": ["red circle"]}))
    labelled = parse_train_spec("dcgan", {"dataset": "shapes"}, {"labels": "shape,colour"})
    labelled.check_sample(parse_sample_spec({"prompts": ["red circle"]}))
    with pytest.raises(InvalidInput, match="prompts draw plain samples"):
        labelled.check_sample(parse_sample_spec({"prompts": ["red circle"], "interpolate": "1:2"}))
    with pytest.raises(InvalidInput, match="'large' names no label value") as info:  # checked at submit
        labelled.check_sample(parse_sample_spec({"prompts": ["large red circle"]}))
    assert info.value.field == "prompts"


def test_d_learns_the_labels_from_real_images_only() -> None:
    """Phase D's gradient on the head's label rows comes from the real images' labels alone: two
    batches that differ only in the label codes asked of G give the same gradient there (a head that
    also learnt from fakes would learn G's private marks; see gantry.worker.gan.infogan). The
    free InfoGAN code's rows do learn from the fakes."""
    s = spec("shapes", labels="colour", latent_codes="3")
    data = shapes.generate(16, seed=0, count=32)
    assert data.labels is not None
    grads = []
    for flip in (False, True):
        torch.manual_seed(0)
        m = build_model(s, channels=3, device=CPU)
        z = m.sample_latents(32, torch.Generator().manual_seed(0))
        if flip:  # ask G for other colours, same noise and free codes
            colour = z[:, NZ + 3 :].roll(1, dims=1)
            z = torch.cat([z[:, : NZ + 3], colour], dim=1)
        real = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 127.5 - 1
        batch = Minibatch(real=real, z=z, labels=torch.from_numpy(data.labels[:, [1]].copy()))
        m.D.zero_grad()
        m.loss.accumulate_gradients("D", batch)
        grads.append(m.D.info_head.fc.weight.grad.clone())
    assert torch.equal(grads[0][3:], grads[1][3:])  # the 8 colour rows: reals only
    assert not torch.equal(grads[0][:3], grads[1][:3])  # the free code's rows see the (changed) fakes


def test_text2img_learns_the_labels_with_an_auxiliary_classifier() -> None:
    """text2img's `labels` (TAC-GAN): D's classifier learns the real images' labels (phase D, reals
    only: the fakes, drawn from other z, leave its gradient unchanged), and G pays the classifier's loss
    on its images for the labels of the captions it drew (phase G)."""
    s = parse_train_spec(
        "text2img",
        {"dataset": "shapes", "image_size": 16, "batch_size": 8, "steps": 2, "checkpoint_every": 2},
        {"nz": NZ, "ngf": 8, "ndf": 8, "embed_dim": 8, "vocab_size": 64, "labels": "shape,colour"},
    )
    data = shapes.generate(16, seed=0, count=64)
    grads, stats = [], []
    for z_seed in (0, 1):
        torch.manual_seed(0)
        m = build_model(s, channels=3, device=CPU)
        assert m.make_batch is not None
        batch = m.make_batch(data, 8, torch.Generator().manual_seed(0), CPU)
        assert batch.labels is not None and batch.labels.shape == (8, 2)
        batch.z = m.sample_latents(8, torch.Generator().manual_seed(z_seed))  # other fakes, same reals
        m.D.zero_grad()
        stats.append(m.loss.accumulate_gradients("D", batch))
        grads.append(m.D.label_head.fc.weight.grad.clone())
        m.D.requires_grad_(False)
        stats[-1].update(m.loss.accumulate_gradients("G", batch))
    assert torch.equal(grads[0], grads[1])
    assert all(st["loss_labels"] > 0 and st["loss_labels_G"] > 0 for st in stats)
    assert stats[0]["loss_labels_G"] != stats[1]["loss_labels_G"]  # G's term reads its own images


def _text2img_spec(**options: Any) -> Any:
    return parse_train_spec(
        "text2img",
        {"dataset": "shapes", "image_size": 16, "batch_size": 32, "steps": 2, "checkpoint_every": 2},
        {"nz": NZ, "ngf": 8, "ndf": 8, "embed_dim": 8, "vocab_size": 64, **options},
    )


def test_text2img_holds_g_to_the_labels_its_caption_names_only() -> None:
    """With labels a caption can leave free (size, position), G's classifier term covers only what
    its caption names: "a red circle" asks for no size, so which size its real image had is no
    business of G's image."""
    s = _text2img_spec(labels="shape,colour,size,position")
    data = shapes.generate(16, seed=0, count=256)
    torch.manual_seed(0)
    m = build_model(s, channels=3, device=CPU)
    assert m.make_batch is not None
    batch = m.make_batch(data, 32, torch.Generator().manual_seed(0), CPU)
    assert batch.named is not None and batch.labels is not None
    short = ~batch.named[:, 2]  # captions naming no size: the short ones, which name no position either
    assert 0 < int(short.sum()) < 32 and torch.equal(short, ~batch.named[:, 3])
    assert batch.named[:, :2].all()
    m.D.requires_grad_(False)
    first = m.loss.accumulate_gradients("G", batch)["loss_labels_G"]
    other = batch.labels.clone()
    other[short, 2:] = (other[short, 2:] + 1) % torch.tensor([2, 9])  # other sizes and places, free rows
    batch.labels = other
    assert m.loss.accumulate_gradients("G", batch)["loss_labels_G"] == first
    other[~short, 3] = (other[~short, 3] + 1) % 9  # a named place changed: G's term sees it
    assert m.loss.accumulate_gradients("G", batch)["loss_labels_G"] != first


def test_free_label_codes_ask_g_for_the_code_where_the_caption_is_silent() -> None:
    """`free_label_codes`: z carries one-hot size and position codes; G is asked for the caption's
    size and position where it names them, and for the codes' where it leaves them free."""
    s = _text2img_spec(labels="shape,colour,size,position", free_label_codes=True)
    data = shapes.generate(16, seed=0, count=256)
    m = build_model(s, channels=3, device=CPU)
    assert m.make_batch is not None and m.latent_shape[0] == NZ + 2 + 9
    batch = m.make_batch(data, 32, torch.Generator().manual_seed(0), CPU)
    assert batch.named is not None and batch.labels is not None
    codes = batch.z.flatten(1)[:, NZ:]
    size_code, place_code = codes[:, :2].argmax(1), codes[:, 2:].argmax(1)
    assert torch.equal(codes.sum(1), torch.full((32,), 2.0))  # one-hot, one per attribute
    targets, counted = m.loss._g_targets(batch)
    short = ~batch.named[:, 2]
    assert counted is None and 0 < int(short.sum()) < 32
    assert torch.equal(targets[short, 2], size_code[short]) and torch.equal(
        targets[short, 3], place_code[short]
    )
    assert torch.equal(targets[~short], batch.labels[~short])


def test_free_label_codes_need_labels_a_caption_can_leave_free() -> None:
    with pytest.raises(InvalidInput, match="needs labels") as info:
        _text2img_spec(free_label_codes=True)
    assert info.value.field == "set.free_label_codes"
    with pytest.raises(InvalidInput, match="cannot be combined with latent_codes"):
        _text2img_spec(labels="size", latent_codes="3", free_label_codes=True)
    m = build_model(_text2img_spec(labels="shape,colour", free_label_codes=True), channels=3, device=CPU)
    assert m.make_batch is not None
    with pytest.raises(InvalidInput, match="none of shape,colour is left free by a caption"):
        m.make_batch(shapes.generate(16, seed=0, count=64), 8, torch.Generator().manual_seed(0), CPU)
