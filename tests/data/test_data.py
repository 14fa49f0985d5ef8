"""Data: built-in digits and planted task, user image folders (ImageFolder, CUB), errors."""
import pytest
import torch

from helpers import assert_only_order_three_differs
from scansearch.data import (DataError, PlantedConfig, generate_planted, load_data, planted_motifs, signal_multiset,
                             stratified_split)
from scansearch.data.digits import random_shift
from scansearch.data.planted import PATTERN_BITS

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def all_batches(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- splits and digits

def test_stratified_split_is_a_seeded_partition_that_keeps_class_shares():
    labels = torch.arange(100) % 4
    parts = stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    joined = torch.sort(torch.cat(parts)).values
    assert torch.equal(joined, torch.arange(100))
    assert [len(p) for p in parts] == [4 * 18, 4 * 4, 4 * 3]  # 25 a class: 18 / 4 / 3
    assert all(torch.equal(a, b) for a, b in zip(parts, stratified_split(labels, (0.7, 0.15, 0.15), seed=3)))
    assert not torch.equal(parts[0], stratified_split(labels, (0.7, 0.15, 0.15), seed=4)[0])


def test_digits_bundle_shapes_split_and_normalisation():
    data = load_data("digits", batch_size=100, augment=False)
    x_train, y_train = all_batches(data.train)
    x_val, _ = all_batches(data.val)
    x_test, _ = all_batches(data.test)
    assert (data.num_classes, data.img_size, data.in_chans) == (10, 8, 1)
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == torch.float32
    assert len(x_train) + len(x_val) + len(x_test) == 1797
    assert abs(len(x_train) / 1797 - 0.70) < 0.01 and abs(len(x_val) / 1797 - 0.15) < 0.01
    assert torch.bincount(y_train, minlength=10).min() >= 120  # every digit present, ~126 each
    assert abs(x_train.mean().item()) < 1e-4 and abs(x_train.std().item() - 1) < 1e-3
    assert data.describe()["n_train"] == len(x_train)


def test_digits_splits_are_seeded_and_disjoint():
    def rows(loader):
        return {tuple(x.flatten().tolist()) for x in all_batches(loader)[0]}
    a, b, c = load_data("digits", seed=0, augment=False), load_data("digits", seed=0, augment=False), load_data(
        "digits", seed=1, augment=False)
    assert rows(a.test) == rows(b.test) and rows(a.test) != rows(c.test)
    # the digits data has a few duplicate images, so allow a handful of exact repeats
    assert len(rows(a.train) & rows(a.test)) <= 5


def test_digits_training_batches_are_shuffled_and_shifted_per_epoch_and_replayable():
    data = load_data("digits", batch_size=64)
    data.train.set_epoch(0)
    first = next(iter(data.train))
    data.train.set_epoch(1)
    other = next(iter(data.train))
    data.train.set_epoch(0)
    again = next(iter(data.train))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    val_a, val_b = next(iter(data.val)), next(iter(data.val))
    assert torch.equal(val_a[0], val_b[0])


def test_random_shift_moves_images_by_at_most_the_limit_and_fills_the_border():
    images = torch.zeros(50, 1, 5, 5)
    images[:, 0, 2, 2] = 1.0
    shifted = random_shift(images, 1, -7.0, torch.Generator().manual_seed(0))
    for img in shifted[:, 0]:
        ones = (img == 1).nonzero()
        assert len(ones) == 1 and (ones[0] - 2).abs().max() <= 1
        assert set(img.unique().tolist()) <= {0.0, 1.0, -7.0}
    assert (shifted == -7.0).any()  # some image moved and got border fill


def test_digits_resize_and_channels():
    data = load_data("digits", img_size=16, in_chans=3, batch_size=8)
    x, _ = next(iter(data.train))
    assert x.shape == (8, 3, 16, 16) and data.img_size == 16 and data.in_chans == 3


# ---------------------------------------------------------------- planted task

def test_signal_multiset_has_flat_single_and_pair_statistics_for_every_motif():
    for motif in range(16):
        spins = 2 * PATTERN_BITS[signal_multiset(motif)].flatten(1) - 1  # (12, 4): TL TR BL BR
        assert spins.sum(0).abs().max() == 0
        for i in range(4):
            for j in range(i + 1, 4):
                assert (spins[:, i] * spins[:, j]).sum() == 0


def test_planted_motifs_are_distinct_and_deterministic():
    assert planted_motifs(4) == planted_motifs(4) and len(set(planted_motifs(16))) == 16


def _block_spins(patterns):
    return 2 * PATTERN_BITS[patterns].flatten(-2) - 1  # (n, B, B, 4)


def test_planted_low_order_statistics_are_class_independent_but_blocks_separate_classes():
    config = PlantedConfig(grid=16, classes=4, motifs_per_image=6, noise=0.0)
    pixels, labels, patterns = generate_planted(config, 4000, seed=0)
    spins = _block_spins(patterns)
    image = 2 * pixels[:, 0] - 1
    stats = {  # per image: the mean over the image of each statistic
        **{f"pixel{i}": spins[..., i].mean((1, 2)) for i in range(4)},
        **{f"pair{i}{j}": (spins[..., i] * spins[..., j]).mean((1, 2)) for i in range(4) for j in range(i + 1, 4)},
        "across_h": (image[:, :, 1:-1:2] * image[:, :, 2::2]).mean((1, 2)),   # neighbours across a block border
        "across_v": (image[:, 1:-1:2, :] * image[:, 2::2, :]).mean((1, 2)),
        "triple": (spins[..., 0] * spins[..., 1] * spins[..., 2]).mean((1, 2)),
    }
    assert_only_order_three_differs(stats, labels)
    # a linear read-out of single pixels and pairs stays at chance; the 2x2 block histogram does not
    low_order = torch.stack([v for k, v in stats.items() if k != "triple"], 1)
    histogram = torch.nn.functional.one_hot(patterns.flatten(1), 16).float().mean(1)
    assert _linear_probe(low_order, labels) < 0.32
    assert _linear_probe(histogram, labels) > 0.95


def _linear_probe(features, labels, classes=4):
    """Held-out accuracy of a logistic regression (first 3000 rows train, rest test)."""
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    head = torch.nn.Linear(features.shape[1], classes)
    optim = torch.optim.LBFGS(head.parameters(), max_iter=100)

    def closure():
        optim.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features[:3000]), labels[:3000])
        loss.backward()
        return loss
    optim.step(closure)
    return (head(features[3000:]).argmax(1) == labels[3000:]).float().mean().item()


def test_planted_bundle_is_deterministic_balanced_and_configurable():
    a = load_data("planted:grid=24,classes=3,motifs_per_image=8,n_train=300,n_val=60,n_test=60", seed=5)
    b = load_data(PlantedConfig(grid=24, classes=3, motifs_per_image=8, n_train=300, n_val=60, n_test=60), seed=5)
    xa, ya = all_batches(a.val)
    xb, yb = all_batches(b.val)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.shape[1:] == (1, 24, 24)
    assert torch.bincount(all_batches(a.train)[1]).tolist() == [100, 100, 100]
    assert a.describe()["planted"]["grid"] == 24 and a.num_classes == 3
    big = load_data("planted:n_train=8,n_val=4,n_test=0", img_size=32, in_chans=3)
    assert next(iter(big.train))[0].shape == (8, 3, 32, 32) and big.test is None


@pytest.mark.parametrize("spec, message", [
    ("planted:grid=15", "even"), ("planted:motifs_per_image=3", "even"), ("planted:classes=17", "classes"),
    ("planted:grid=8,motifs_per_image=4", "blocks"), ("planted:colour=2", "unknown parameter"),
    ("planted:grid=big", "number"),
])
def test_planted_bad_configs_fail_clearly(spec, message):
    with pytest.raises(DataError, match=message):
        load_data(spec)


def test_planted_img_size_must_be_a_multiple_of_the_grid():
    with pytest.raises(DataError, match="multiple"):
        load_data("planted:n_train=4,n_val=4,n_test=4", img_size=20)


# ---------------------------------------------------------------- image folders

def make_image(path, colour, size=(12, 10), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def make_class_tree(root, classes=("cat", "dog", "owl"), per_class=10):
    for c, name in enumerate(classes):
        for i in range(per_class):
            make_image(root / name / f"{i}.png", (40 * c, 10 * i, 100))


def test_flat_imagefolder_is_split_and_decoded(tmp_path):
    make_class_tree(tmp_path / "pets", per_class=20)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    data = load_data(tmp_path / "pets", img_size=16, batch_size=8, workers=0)
    assert data.class_names == ["cat", "dog", "owl"] and data.details["layout"] == "imagefolder-flat"
    assert (data.train.num_samples, data.val.num_samples, data.test.num_samples) == (42, 9, 9)
    x, y = all_batches(data.val)
    assert x.shape == (9, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    blue = (100 / 255 - 0.406) / 0.225  # ImageNet normalisation of the blue channel
    assert torch.allclose(x[:, 2], torch.full_like(x[:, 2], blue), atol=1e-5)


def test_imagefolder_training_augmentation_is_seeded_and_workers_agree(tmp_path):
    for i in range(4):  # a left-to-right ramp shows crops and flips
        img = Image.linear_gradient("L").resize((32, 32)).transpose(Image.Transpose.ROTATE_90).convert("RGB")
        (tmp_path / "a").mkdir(exist_ok=True), (tmp_path / "b").mkdir(exist_ok=True)
        img.save(tmp_path / "a" / f"{i}.png"), img.save(tmp_path / "b" / f"{i}.png")
    runs = [all_batches(load_data(tmp_path, img_size=8, batch_size=4, workers=w, in_chans=1).train) for w in (0, 1)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0].shape[1] == 1
    loader = load_data(tmp_path, img_size=8, batch_size=4, workers=0).train
    loader.set_epoch(1)
    assert not torch.equal(all_batches(loader)[0], runs[0][0].expand(-1, 3, -1, -1))


@pytest.mark.parametrize("workers", [0, 1])
def test_independent_folder_loader_keeps_its_stream_and_leaves_the_global_rng(tmp_path, workers):
    make_class_tree(tmp_path / "pets", per_class=20)
    val = load_data(tmp_path / "pets", img_size=8, batch_size=2, workers=workers).val
    expected = [y.tolist() for _, y in val]
    other = val.independent()
    stream = iter(other)
    first = next(stream)[1].tolist()
    rng = torch.get_rng_state()
    assert [y.tolist() for _, y in val] == expected  # a second reader of the original: evaluation
    assert torch.equal(rng, torch.get_rng_state())
    assert [first] + [y.tolist() for _, y in stream] == expected  # the stream went on where it was


def test_independent_tensor_loader_gives_the_same_batches_with_its_own_epoch():
    train = load_data("digits", batch_size=64).train
    other = train.independent()
    other.set_epoch(3)
    assert train.epoch == 0 and other.epoch == 3
    train.set_epoch(3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(train, other))


def test_split_imagefolder_with_and_without_val(tmp_path):
    make_class_tree(tmp_path / "train", per_class=10)
    make_class_tree(tmp_path / "test", per_class=2)
    carved = load_data(tmp_path, img_size=8, workers=0)
    assert (carved.train.num_samples, carved.val.num_samples, carved.test.num_samples) == (27, 3, 6)
    make_class_tree(tmp_path / "val", per_class=3)
    data = load_data(tmp_path, img_size=8, workers=0)
    assert (data.train.num_samples, data.val.num_samples) == (30, 9) and data.details["layout"] == "imagefolder-splits"


def test_split_imagefolder_class_mismatch_is_reported(tmp_path):
    make_class_tree(tmp_path / "train", classes=("cat", "dog"))
    make_class_tree(tmp_path / "val", classes=("cat", "eel"))
    with pytest.raises(DataError, match=r"classes differ.*dog.*eel"):
        load_data(tmp_path, workers=0)


def make_cub(root, classes=3, per_class=6):
    (root / "images").mkdir(parents=True)
    images, labels, split, names = [], [], [], []
    image_id = 0
    for c in range(1, classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        names.append(f"{c} {folder}")
        for i in range(per_class):
            image_id += 1
            make_image(root / "images" / folder / f"bird_{i}.jpg", (50 * c, 80, 20), fmt="JPEG")
            images.append(f"{image_id} {folder}/bird_{i}.jpg")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(i < per_class - 1)}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", names)):
        (root / name).write_text("\n".join(lines) + "\n")


def test_cub_layout_is_read_with_val_carved_from_train(tmp_path):
    make_cub(tmp_path / "CUB_200_2011", classes=4, per_class=11)
    data = load_data(tmp_path, img_size=16, workers=0)
    assert data.details["layout"] == "cub-200-2011" and data.class_names[0] == "001.Bird_1"
    assert (data.train.num_samples, data.val.num_samples, data.test.num_samples) == (36, 4, 4)
    x, y = all_batches(data.test)
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("file, line, content, message", [
    ("images.txt", 2, "two 001.Bird_1/bird_1.jpg", r"images\.txt:2: expected 2 fields"),
    ("image_class_labels.txt", 3, "3 9", r"image_class_labels\.txt:3: unexpected value '9'"),
    ("train_test_split.txt", 1, "1 yes", r"train_test_split\.txt:1: unexpected value 'yes'"),
    ("images.txt", 4, "4 001.Bird_1/missing.jpg", r"images\.txt:4: image file not found"),
])
def test_malformed_cub_files_name_the_file_and_line(tmp_path, file, line, content, message):
    make_cub(tmp_path)
    lines = (tmp_path / file).read_text().splitlines()
    lines[line - 1] = content
    (tmp_path / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_data(tmp_path, workers=0)


def test_cub_missing_metadata_file_is_named(tmp_path):
    make_cub(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"classes\.txt: missing"):
        load_data(tmp_path, workers=0)


def test_missing_and_empty_folders_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="no such data set or folder"):
        load_data(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no class folders"):
        load_data(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match=r"cat: class folder has no image files"):
        load_data(tmp_path)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_names_its_path_in_one_line(tmp_path, workers):
    make_class_tree(tmp_path, classes=("a", "b"), per_class=10)
    for name in ("a", "b"):
        for i in range(10):
            (tmp_path / name / f"{i}.png").write_bytes(b"not really a png")
    data = load_data(tmp_path, img_size=8, workers=workers)
    with pytest.raises(DataError) as info:
        next(iter(data.train))
    assert "cannot read image" in str(info.value) and ".png" in str(info.value)
    assert "\n" not in str(info.value)
