"""IDX folders (MNIST's format): parsing, splits, subsets, options, and every malformed file."""
import gzip
import struct

import pytest
import torch

from scansearch.data import DataError, load_data, read_idx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# type byte -> struct format of one big-endian value: written independently of the reader
FORMATS = {0x08: "B", 0x09: "b", 0x0B: "h", 0x0C: "i", 0x0D: "f", 0x0E: "d"}


def write_idx(path, values, code=0x08):
    """Write ``values`` as an IDX file, gzipped when the name ends in .gz."""
    dims, flat = list(values.shape), values.flatten().tolist()
    data = (bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
            + struct.pack(f">{len(flat)}{FORMATS[code]}", *flat))
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_images(n_per_class, classes, size, seed, first_label=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_per_class * classes, size, size), generator=gen, dtype=torch.uint8)
    labels = (torch.arange(n_per_class * classes) % classes + first_label).to(torch.uint8)
    assert len({bytes(im.flatten().tolist()) for im in images}) == len(images)
    return images, labels


def make_idx(folder, *, classes=3, n_per_class=20, n_test_per_class=4, size=6, gz=False, first_label=0, sep="-"):
    """A tiny IDX folder: train (and t10k unless n_test_per_class is 0); returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    written = {}
    for prefix, n, seed in (("train", n_per_class, 1), ("t10k", n_test_per_class, 2)):
        if n == 0:
            continue
        images, labels = make_images(n, classes, size, seed, first_label)
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", labels)
        written[prefix] = (images, labels)
    return written


def pixels_of(loader, data):
    """A loader's images with the normalisation undone, back as uint8 pixel values."""
    x = loader.images * data.std[0] + data.mean[0]
    return (x * 255).round().to(torch.uint8)[:, 0]


def lookup(images, labels):
    return {bytes(im.flatten().tolist()): (i, int(y)) for i, (im, y) in enumerate(zip(images, labels))}


def sizes(data):
    return data.train.num_samples, data.val.num_samples, data.test.num_samples


def same_splits(a, b):
    return all(torch.equal(getattr(a, s).images, getattr(b, s).images) for s in ("train", "val", "test"))


def one_line_error(spec, *fragments, **kwargs):
    with pytest.raises(DataError) as info:
        load_data(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- round trip, splits, subsets

@pytest.mark.parametrize("gz", [False, True])
def test_pixels_and_labels_come_back_exactly_as_written(tmp_path, gz):
    written = make_idx(tmp_path / "mnist", gz=gz)
    data = load_data(tmp_path / "mnist", augment=False)
    assert (data.name, data.num_classes, data.class_names, data.img_size, data.in_chans) == (
        "mnist", 3, ["0", "1", "2"], 6, 1)
    train = lookup(*written["train"])
    seen = []
    for loader in (data.train, data.val):
        for im, y in zip(pixels_of(loader, data), loader.labels):
            index, label = train[bytes(im.flatten().tolist())]
            assert label == int(y)
            seen.append(index)
    assert sorted(seen) == list(range(60))  # train and val: disjoint, and all of the train file
    test_images, test_labels = written["t10k"]
    assert torch.equal(pixels_of(data.test, data), test_images) and torch.equal(data.test.labels, test_labels.long())
    x_train = data.train.images
    assert abs(x_train.mean().item()) < 1e-5 and abs(x_train.std().item() - 1) < 1e-4  # train statistics


@pytest.mark.parametrize("code", [0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_every_idx_type_is_read_big_endian(tmp_path, code):
    dtype = {0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32, 0x0D: torch.float32, 0x0E: torch.float64}[code]
    values = {0x09: [-128, -1, 0, 5, 127, 64], 0x0B: [-30000, -2, 0, 258, 4097, 32767],
              0x0C: [-2**31, -70000, 0, 1, 65536 + 3, 2**31 - 1], 0x0D: [-1.5, 0.0, 0.25, 3e8, -7.0, 1.0],
              0x0E: [-1e300, 0.1, 2.5, 0.0, 1e-300, -3.25]}[code]
    tensor = torch.tensor(values, dtype=dtype).view(1, 2, 3)
    for name in ("odd.idx", "odd.idx.gz"):
        back = read_idx(write_idx(tmp_path / name, tensor, code))
        assert back.dtype == dtype and torch.equal(back, tensor)


def test_int16_images_are_used_as_stored(tmp_path):
    images = torch.arange(-500, 500, 10, dtype=torch.int16)[:96].view(24, 2, 2) * 31
    write_idx(tmp_path / "train-images-idx3-ubyte", images, 0x0B)
    write_idx(tmp_path / "train-labels-idx1-ubyte", torch.arange(24, dtype=torch.uint8) % 2)
    data = load_data(tmp_path, augment=False)
    x = torch.cat([data.train.images, data.val.images, data.test.images])[:, 0] * data.std[0] + data.mean[0]
    assert sorted(x.round().flatten().tolist()) == sorted(images.float().flatten().tolist())


def test_without_t10k_the_splits_are_stratified_seeded_and_disjoint(tmp_path):
    make_idx(tmp_path, n_test_per_class=0)
    a, b, c = (load_data(tmp_path, seed=s, augment=False) for s in (0, 0, 1))
    for loader, per_class in ((a.train, 14), (a.val, 3), (a.test, 3)):  # 70/15/15 of 20
        assert torch.bincount(loader.labels).tolist() == [per_class] * 3
    keys = [set(lookup(pixels_of(l, a), l.labels)) for l in (a.train, a.val, a.test)]
    assert sum(map(len, keys)) == len(set.union(*keys)) == 60
    assert same_splits(a, b) and not torch.equal(a.val.images, c.val.images)
    assert a.details["split"] == "stratified 70/15/15 of train"


def test_t10k_is_the_test_split_and_val_is_a_tenth_of_train(tmp_path):
    make_idx(tmp_path, n_test_per_class=5)
    data = load_data(tmp_path, augment=False)
    counts = [torch.bincount(loader.labels).tolist() for loader in (data.train, data.val, data.test)]
    assert counts == [[18] * 3, [2] * 3, [5] * 3]
    assert data.describe()["format"] == "idx" and "t10k" in data.describe()["split"]
    assert torch.equal(load_data(tmp_path, seed=0, augment=False).val.images, data.val.images)
    assert not torch.equal(load_data(tmp_path, seed=1, augment=False).val.images, data.val.images)


def test_subsets_are_exact_stratified_seeded_and_drawn_from_their_split(tmp_path):
    make_idx(tmp_path, n_per_class=40, n_test_per_class=10)
    full = load_data(tmp_path, augment=False)
    spec = f"{tmp_path}:n_train=30,n_val=5,n_test=9"
    a, b = load_data(spec, augment=False), load_data(spec, augment=False)
    assert sizes(a) == (30, 5, 9) and same_splits(a, b)
    assert torch.bincount(a.train.labels).tolist() == [10] * 3 and torch.bincount(a.test.labels).tolist() == [3] * 3
    assert sorted(torch.bincount(a.val.labels).tolist()) == [1, 2, 2]
    for split in ("train", "val", "test"):
        sub = getattr(a, split)
        whole = lookup(pixels_of(getattr(full, split), full), getattr(full, split).labels)
        assert set(lookup(pixels_of(sub, a), sub.labels)) <= set(whole)
    assert not torch.equal(load_data(f"{tmp_path}:n_train=30", seed=3, augment=False).train.images, a.train.images)
    assert abs(a.train.images.mean().item()) < 1e-5  # normalised with the training subset's statistics
    assert a.describe()["subset"] == {"n_train": 30, "n_val": 5, "n_test": 9}
    assert sizes(load_data(f"{tmp_path}:n_train=1000,n_test=3")) == (108, 12, 3)  # too many: the whole split


# ---------------------------------------------------------------- dispatch, options, shapes

def test_load_data_dispatch_dot_names_and_path_objects(tmp_path):
    make_idx(tmp_path / "dots", sep=".", gz=True)
    (tmp_path / "dots" / "cats").mkdir()  # a class-folder look-alike: IDX files win
    data = load_data(tmp_path / "dots")
    assert data.details["format"] == "idx" and data.name == "dots"
    assert load_data(str(tmp_path / "dots") + ":n_train=30").train.num_samples == 30
    x, y = next(iter(data.train))
    assert x.shape == (54, 1, 6, 6) and x.dtype == torch.float32 and y.dtype == torch.long


@pytest.mark.parametrize("options, message", [
    ("n_trian=5", "unknown option 'n_trian=5'"), ("n_train=abc", "n_train must be a positive integer"),
    ("n_val=0", "n_val must be a positive integer"), ("n_test=-1", "n_test must be a positive integer"),
    ("n_train=5,seed=2", "unknown option 'seed=2'"),
])
def test_bad_options_list_the_valid_keys(tmp_path, options, message):
    make_idx(tmp_path)
    one_line_error(f"{tmp_path}:{options}", message, "valid: n_train, n_val, n_test")


def test_options_on_a_folder_that_is_not_idx_or_not_there(tmp_path):
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    one_line_error(f"{tmp_path / 'pets'}:n_train=5", "apply to IDX folders only")
    one_line_error(f"{tmp_path / 'nowhere'}:n_train=5", "no such data set or folder")


def test_resize_channels_and_labels_that_start_at_one(tmp_path):
    make_idx(tmp_path, first_label=1)
    data = load_data(tmp_path, img_size=12, in_chans=3, batch_size=8)
    x, y = next(iter(data.train))
    assert x.shape == (8, 3, 12, 12) and torch.equal(x[:, 0], x[:, 2])
    assert data.class_names == ["1", "2", "3"] and set(y.tolist()) <= {0, 1, 2}
    assert (data.img_size, data.in_chans, len(data.mean)) == (12, 3, 3)
    (tmp_path / "classes.txt").write_text("alpha\nbeta\n\ngamma\n")
    assert load_data(tmp_path).class_names == ["alpha", "beta", "gamma"]
    one_line_error(tmp_path, "cannot make 2-channel images", in_chans=2)


def test_augmentation_shifts_half_the_training_images_and_replays(tmp_path):
    make_idx(tmp_path, n_per_class=40, size=14)
    data = load_data(tmp_path, batch_size=1000)
    plain = load_data(tmp_path, batch_size=1000, augment=False)
    x0, y0 = next(iter(data.train))
    again, _ = next(iter(data.train))
    ref, ref_y = next(iter(plain.train))  # same shuffle: same seed and epoch
    assert torch.equal(x0, again) and torch.equal(y0, ref_y)
    moved = (x0 != ref).flatten(1).any(1).float().mean().item()
    assert 0.25 < moved < 0.75
    assert next(iter(plain.val))[0].equal(next(iter(data.val))[0])  # val is never augmented
    data.train.set_epoch(1)
    assert not torch.equal(next(iter(data.train))[0], x0)


# ---------------------------------------------------------------- malformed files

def corrupt(name, transform):
    """A case: rewrite file ``name`` of a good folder as ``transform(bytes)``."""
    def apply(folder):
        path = folder / name
        path.write_bytes(transform(path.read_bytes()))
        return path
    return apply


def replace(name, values, code=0x08):
    return lambda folder: write_idx(folder / name, values, code)


def two_class_names(folder):
    (folder / "classes.txt").write_text("a\nb\n")
    return folder / "classes.txt"


IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
CASES = {
    "bad magic": (corrupt(IMAGES, lambda b: b"\x01\x02" + b[2:]), "not an IDX file"),
    "unknown type": (corrupt(LABELS, lambda b: b[:2] + b"\x0a" + b[3:]), "unknown IDX data type 0x0A"),
    "truncated data": (corrupt(IMAGES, lambda b: b[:-1]), "2159 data bytes but dimensions [60, 6, 6] need 2160"),
    "extra data": (corrupt(LABELS, lambda b: b + b"\0"), "61 data bytes but dimensions [60] need 60"),
    "truncated header": (corrupt(IMAGES, lambda b: b[:9]), "truncated IDX header"),
    "empty file": (corrupt(IMAGES, lambda b: b""), "not an IDX file"),
    "images 2-D": (replace(IMAGES, torch.zeros(60, 36, dtype=torch.uint8)), "images must be 3-D"),
    "labels 2-D": (replace(LABELS, torch.zeros(60, 1, dtype=torch.uint8)), "labels must be 1-D"),
    "float labels": (replace(LABELS, torch.zeros(60), 0x0D), "labels must be integers, got float32"),
    "count mismatch": (replace(LABELS, torch.arange(59, dtype=torch.uint8) % 3), "59 labels but"),
    "one class": (replace(LABELS, torch.ones(60, dtype=torch.uint8)), "every label is 1"),
    "ids not labels": (replace(LABELS, torch.arange(60, dtype=torch.uint8)), "60 distinct labels among 60"),
    "test size": (replace("t10k-images-idx3-ubyte", torch.zeros(12, 7, 7, dtype=torch.uint8)),
                  "images are 7x7 but train-images-idx3-ubyte holds 6x6"),
    "test labels": (replace("t10k-labels-idx1-ubyte", torch.full((12,), 9, dtype=torch.uint8)),
                    "labels [9] never occur in train-labels-idx1-ubyte"),
    "classes.txt": (two_class_names, "2 names for 3 classes"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_files_give_one_line_naming_the_file(tmp_path, case):
    make_idx(tmp_path)
    damage, message = CASES[case]
    path = damage(tmp_path)
    one_line_error(tmp_path, str(path), message)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:len(b) // 2], "corrupt gzip file"),
    (lambda b: b[:20] + bytes(x ^ 0xFF for x in b[20:40]) + b[40:], "corrupt gzip file"),
    (gzip.decompress, "corrupt gzip file"),  # plain IDX bytes under a .gz name
])
def test_corrupt_gzip_names_the_file(tmp_path, damage, message):
    make_idx(tmp_path, gz=True)
    path = corrupt(IMAGES + ".gz", damage)(tmp_path)
    one_line_error(tmp_path, str(path), message)


def test_a_half_pair_names_the_missing_partner(tmp_path):
    make_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    one_line_error(tmp_path, str(tmp_path / "t10k-images-idx3-ubyte"), "no matching t10k-labels-idx1-ubyte")
    (tmp_path / LABELS).unlink()
    one_line_error(tmp_path, str(tmp_path / IMAGES), "no matching train-labels-idx1-ubyte")


def test_non_square_images_need_img_size(tmp_path):
    images = torch.zeros(30, 4, 6, dtype=torch.uint8)
    images[::2] = 200
    write_idx(tmp_path / IMAGES, images)
    write_idx(tmp_path / LABELS, torch.arange(30, dtype=torch.uint8) % 3)
    one_line_error(tmp_path, str(tmp_path / IMAGES), "4x6, not square")
    assert load_data(tmp_path, img_size=5).train.images.shape[1:] == (1, 5, 5)
