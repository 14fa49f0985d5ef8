"""The planted task's block shapes (data/planted.py): 2x2 squares (default), 4x1 column
segments and 1x4 row segments. Every check reads the blocks back from the image pixels,
so a block drawn in the wrong geometry fails them (the returned pattern ids alone would
not tell)."""
import hashlib

import pytest
import torch

from helpers import assert_only_order_three_differs

from scansearch.cli import EXIT_USER, main
from scansearch.data import DataError, PlantedConfig, generate_planted, load_data
from scansearch.data.planted import SHAPES, pattern_bits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BITS = torch.tensor([8, 4, 2, 1])
# (height, width) of each block shape, written out here so that the checks do not trust the module's table
BLOCK = {"2x2": (2, 2), "4x1": (4, 1), "1x4": (1, 4)}


def _sha(*tensors):
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _read_blocks(pixels, shape):
    """(n, 1, G, G) 0/1 pixels -> (n, G/bh, G/bw, 4) bits of each block, in pattern order (row-major)."""
    bh, bw = BLOCK[shape]
    n, grid = pixels.shape[0], pixels.shape[-1]
    x = pixels[:, 0].round().long()
    return x.view(n, grid // bh, bh, grid // bw, bw).permute(0, 1, 3, 2, 4).reshape(n, grid // bh, grid // bw, 4)


def _histogram(blocks):
    ids = (blocks * BITS).sum(-1)
    return torch.nn.functional.one_hot(ids.flatten(1), 16).float().mean(1)


def _nearest_centroid(features, labels, classes=4, n_fit=3000):
    """Held-out accuracy of a nearest-centroid classifier on standardised features."""
    features = (features - features[:n_fit].mean(0)) / (features[:n_fit].std(0) + 1e-6)
    centroids = torch.stack([features[:n_fit][labels[:n_fit] == k].mean(0) for k in range(classes)])
    return (torch.cdist(features[n_fit:], centroids).argmin(1) == labels[n_fit:]).float().mean().item()


# ---------------------------------------------------------------- the default is unchanged

def test_default_shape_output_is_byte_identical_to_before_shapes_existed():
    """Golden values recorded from the generator before the ``shape`` option was added."""
    assert _sha(*generate_planted(PlantedConfig(grid=16, motifs_per_image=6), 64, seed=0)) == "9fa4a0071f0127bb"
    assert _sha(*generate_planted(PlantedConfig(grid=24, classes=3, motifs_per_image=8), 50, seed=7)) \
        == "8ee2a6171b2cfa24"
    data = load_data("planted:grid=24,classes=3,motifs_per_image=8,n_train=40,n_val=20,n_test=20", seed=5)
    assert _sha(data.train.images, data.train.labels, data.val.images, data.val.labels,
                data.test.images, data.test.labels) == "7ca8ceb13be52ae6"
    pixels, labels, patterns = generate_planted(PlantedConfig(grid=8, motifs_per_image=2, noise=0.0), 3, seed=1)
    assert labels.tolist() == [1, 2, 0]
    assert patterns.tolist() == [
        [[15, 10, 12, 8], [13, 11, 1, 1], [4, 15, 2, 7], [8, 12, 9, 6]],
        [[6, 5, 15, 7], [12, 14, 10, 5], [0, 11, 0, 3], [11, 9, 0, 13]],
        [[3, 15, 12, 9], [4, 0, 7, 2], [14, 9, 1, 5], [0, 7, 12, 10]]]
    assert pixels[0, 0, :2, :2].tolist() == [[1, 1], [1, 1]] and pixels[0, 0, :2, 2:4].tolist() == [[1, 0], [1, 0]]


# ---------------------------------------------------------------- geometry

@pytest.mark.parametrize("shape", list(BLOCK))
def test_blocks_have_their_shape_in_the_image(shape):
    config = PlantedConfig(grid=16, shape=shape, noise=0.0)
    pixels, labels, patterns = generate_planted(config, 20, seed=3)
    assert SHAPES == BLOCK
    bh, bw = BLOCK[shape]
    assert patterns.shape == (20, 16 // bh, 16 // bw) and pattern_bits(shape).shape == (16, bh, bw)
    assert torch.equal((_read_blocks(pixels, shape) * BITS).sum(-1), patterns)
    # pattern 0b1000 lights the first pixel: top-left, top of the column, left end of the row
    assert pattern_bits(shape)[0b1000].flatten().tolist() == [1, 0, 0, 0]
    # only the geometry depends on the shape: the same seed draws the same blocks in the same order
    _, same_labels, square = generate_planted(PlantedConfig(grid=16, noise=0.0), 20, seed=3)
    assert torch.equal(labels, same_labels) and torch.equal(patterns.flatten(1), square.flatten(1))


# ---------------------------------------------------------------- what the classes differ in

@pytest.mark.parametrize("shape", ["4x1", "1x4"])
def test_segment_low_order_statistics_are_class_independent(shape):
    config = PlantedConfig(grid=16, classes=4, motifs_per_image=6, noise=0.0, shape=shape)
    pixels, labels, _ = generate_planted(config, 4000, seed=0)
    spins = 2 * _read_blocks(pixels, shape).float() - 1
    image = 2 * pixels[:, 0] - 1
    across = (image[:, 3:-1:4, :] * image[:, 4::4, :] if shape == "4x1"      # neighbours across a block end
              else image[:, :, 3:-1:4] * image[:, :, 4::4])
    stats = {  # per image: the mean over the image of each statistic
        **{f"pixel{i}": spins[..., i].mean((1, 2)) for i in range(4)},
        **{f"pair{i}{j}": (spins[..., i] * spins[..., j]).mean((1, 2)) for i in range(4) for j in range(i + 1, 4)},
        "across_end": across.mean((1, 2)),
        "horizontal": (image[:, :, :-1] * image[:, :, 1:]).mean((1, 2)),
        "vertical": (image[:, :-1, :] * image[:, 1:, :]).mean((1, 2)),
        "diagonal": (image[:, :-1, :-1] * image[:, 1:, 1:]).mean((1, 2)),
        "anti_diagonal": (image[:, :-1, 1:] * image[:, 1:, :-1]).mean((1, 2)),
        "triple": (spins[..., 0] * spins[..., 1] * spins[..., 2]).mean((1, 2)),
    }
    assert_only_order_three_differs(stats, labels)
    low_order = torch.stack([v for k, v in stats.items() if k != "triple"], 1)
    assert _nearest_centroid(low_order, labels) < 0.32


@pytest.mark.parametrize("shape", list(BLOCK))
def test_only_blocks_read_in_the_planted_shape_separate_the_classes(shape):
    """Histogram of 4-pixel patterns per image -> nearest centroid: near 100% read in the
    planted shape, near chance (25%) read in either other shape."""
    config = PlantedConfig(grid=16, classes=4, motifs_per_image=6, noise=0.0, shape=shape)
    pixels, labels, _ = generate_planted(config, 4000, seed=0)
    accuracy = {read: _nearest_centroid(_histogram(_read_blocks(pixels, read)), labels) for read in BLOCK}
    assert accuracy[shape] > 0.95, accuracy
    for read in BLOCK:
        if read != shape:
            assert accuracy[read] < 0.32, accuracy


# ---------------------------------------------------------------- spec and errors

def test_shape_spec_is_parsed_and_described():
    assert PlantedConfig.from_spec("planted").shape == "2x2"
    config = PlantedConfig.from_spec("planted: shape = 4x1 ,grid=16,motifs_per_image=10")
    assert config == PlantedConfig(grid=16, motifs_per_image=10, shape="4x1")
    assert config.block == (4, 1) and config.block_grid == (4, 16)
    data = load_data("planted:shape=1x4,grid=8,motifs_per_image=2,n_train=8,n_val=4,n_test=4", seed=1)
    assert data.describe()["planted"]["shape"] == "1x4" and "1x4" in data.details["source"]
    assert next(iter(data.train))[0].shape == (8, 1, 8, 8)
    assert load_data("planted:n_train=4,n_val=4,n_test=0").details["planted"]["shape"] == "2x2"


@pytest.mark.parametrize("spec, message", [
    ("planted:shape=3x3", "shape must be one of 2x2, 4x1, 1x4, got '3x3'"),
    ("planted:shape=", "shape must be one of"),
    ("planted:shape=4X1", "shape must be one of"),
    ("planted:shape=4x1,grid=18", "grid must be a multiple of 4 and at least 4 for shape=4x1"),
    ("planted:shape=1x4,grid=6", "multiple of 4"),
    ("planted:shape=2x2,grid=15", "even"),
    ("planted:shape=4x1,grid=8,motifs_per_image=4", "24 of the 16 4x1 blocks"),
    ("planted:shape=1x4,grid=4,motifs_per_image=2", "12 of the 4 1x4 blocks"),
])
def test_bad_shapes_fail_clearly_on_one_line(spec, message):
    with pytest.raises(DataError, match=message) as error:
        load_data(spec)
    assert "\n" not in str(error.value)


def test_a_config_built_in_python_is_checked_too():
    with pytest.raises(DataError, match="shape must be one of"):
        generate_planted(PlantedConfig(shape=(4, 1)), 4, seed=0)
    with pytest.raises(DataError, match="shape must be one of"):
        pattern_bits("2x1")


def test_a_bad_shape_on_the_command_line_is_the_users_error(tmp_path, capsys):
    code = main(["train", "vim_micro", "--data", "planted:shape=2x8,n_train=8,n_val=4,n_test=4", "--epochs", "1",
                 "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER and len(err) == 1 and "shape must be one of 2x2, 4x1, 1x4" in err[0], err
