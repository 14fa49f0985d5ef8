"""Search spaces (shipped and user YAML) and the locality metrics."""
import itertools

import pytest
import torch

from scansearch import load_space
from scansearch.spaces import (SpaceError, best_subset, get_pattern, load_space as load_space_from_spaces,
                               pattern_locality, set_locality, shipped_spaces)


def test_exported_from_both_places():
    assert load_space is load_space_from_spaces


@pytest.mark.parametrize("name,candidates,k", [
    ("local8", ("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w7", "w7_flip"), 4),
    ("cross4", ("h", "v", "h_flip", "v_flip"), 4),
    ("bidir2", ("h", "h_flip"), 2),
    ("local8_none", ("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w7", "w7_flip", "none"), 4),
])
def test_shipped_spaces(name, candidates, k):
    space = load_space(name)
    assert (space.name, space.candidates, space.k) == (name, candidates, k)
    assert space.allows_none == ("none" in candidates)


def test_ext16_has_every_family_both_ways():
    space = load_space("ext16")
    assert len(space.candidates) == 16 and space.k == 4
    bases = {c.removesuffix("_flip") for c in space.candidates}
    assert bases == {"h", "v", "w2", "snake_h", "snake_v", "diag", "hilbert", "spiral"}
    assert all(f"{b}_flip" in space.candidates for b in bases)


def test_shipped_list():
    assert {"local8", "cross4", "bidir2", "ext16", "local8_none"} <= set(shipped_spaces())


def test_user_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ncandidates: [w3, w3_flip, hilbert, none]\nk: 1\n")
    space = load_space(str(path))
    assert space.candidates == ("w3", "w3_flip", "hilbert", "none") and space.patterns == ("w3", "w3_flip", "hilbert")
    assert load_space(path) == space


@pytest.mark.parametrize("text,message", [
    ("[h, v]", "must be a mapping"),
    ("name: x\ncandidates: [h, zz]\nk: 1", "candidate 'zz' is not a scan pattern"),
    ("name: x\ncandidates: [h, h]\nk: 1", "duplicate candidate(s) h"),
    ("name: x\ncandidates: [h, v]\nk: 3", "'k' must be an integer from 1 to 2"),
    ("name: x\ncandidates: [h, none]\nk: 2", "'k' must be an integer from 1 to 1"),
    ("name: x\ncandidates: []\nk: 1", "'candidates' must be a non-empty list"),
    ("candidates: [h]\nk: 1", "'name' must be a non-empty string"),
    ("name: x\ncandidates: [h]\nk: 1\nextra: 2", "unknown key(s) extra"),
    ("name: x\ncandidates: [h\nk: 1", "YAML syntax error"),
])
def test_bad_space_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_unknown_space_and_missing_file():
    with pytest.raises(SpaceError, match="unknown search space 'local9'"):
        load_space("local9")
    with pytest.raises(SpaceError, match="not found"):
        load_space("nowhere/space.yaml")


def test_h_on_14x14_mean_neighbour_distance_is_7_5():
    # 14 rows x 13 horizontal pairs at distance 1, 13 x 14 vertical pairs at distance 14:
    # (182 * 1 + 182 * 14) / 364 = 7.5
    m = pattern_locality("h", 14, 14)
    assert m.mean_distance == 7.5
    assert m.max_distance == 14
    assert m.neighbour_steps == pytest.approx(14 * 13 / 195)  # a row change is not a neighbour step


@pytest.mark.parametrize("H,W", [(14, 14), (5, 9), (1, 7)])
def test_snake_moves_only_to_neighbours(H, W):
    assert pattern_locality("snake_h", H, W).neighbour_steps == 1.0
    assert pattern_locality("snake_v", H, W).neighbour_steps == 1.0


def _brute_force_distances(name, H, W):
    step = get_pattern(name).inverse(H, W).tolist()
    dists = []
    for i, j in itertools.product(range(H), range(W)):
        for di, dj in ((0, 1), (1, 0)):
            if i + di < H and j + dj < W:
                dists.append(abs(step[i * W + j] - step[(i + di) * W + j + dj]))
    return dists


@pytest.mark.parametrize("name", ["w2", "hilbert", "diag", "spiral_flip", "w3"])
def test_metrics_match_brute_force(name):
    H, W = 6, 7
    d = _brute_force_distances(name, H, W)
    m = pattern_locality(name, H, W)
    assert m.mean_distance == pytest.approx(sum(d) / len(d))
    assert m.max_distance == max(d)


def test_set_locality_takes_the_closest_member():
    H, W = 6, 7
    per = [_brute_force_distances(n, H, W) for n in ("h", "w2")]
    expected = sum(min(a, b) for a, b in zip(*per)) / len(per[0])
    assert set_locality(["h", "w2"], H, W) == pytest.approx(expected)
    assert set_locality(["h", "v"], 14, 14) == 1.0  # every neighbour is adjacent in one of them


def test_best_subset_is_the_minimum():
    names = ["h", "w2", "w7", "diag"]
    subset, score = best_subset(names, 2, 9, 9)
    all_scores = [set_locality(s, 9, 9) for s in itertools.combinations(names, 2)]
    assert score == pytest.approx(min(all_scores))
    assert set_locality(subset, 9, 9) == pytest.approx(score)


def test_single_token_grid():
    m = pattern_locality("hilbert", 1, 1)
    assert (m.mean_distance, m.max_distance, m.neighbour_steps) == (0.0, 0, 1.0)
    assert torch.equal(get_pattern("spiral").order(1, 1), torch.tensor([0]))
