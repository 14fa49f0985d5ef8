"""Genotypes: YAML round trips, presets, and one clear GenotypeError for every malformed file."""
import os
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import FIXTURES
from scansearch import Genotype, GenotypeError, load_space

BAD = sorted((FIXTURES / "bad_genotypes").glob("*.yaml"))
# Facts from the published work, kept with the tests (the genotypes LocalMamba searched).
ANCHORS = FIXTURES / "anchors" / "localmamba_genotypes.yaml"


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):]


def test_corpus_is_large_enough():
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_malformed_file_gives_one_clear_error(path):
    with pytest.raises(GenotypeError) as info:
        Genotype.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert _expected(path) in message
    assert "\n" not in message


def test_round_trip_exact(tmp_path):
    g = Genotype(
        layers=(("h", "v_flip", "w7", "w7_flip"), "none", ("h_flip", "w2_flip", "w7", "v")),
        model="local_vim_micro", space="local8_none", grid=(8, 8),
        provenance={"searcher": "darts", "seed": 3, "score": 0.981, "nested": {"a": [1, 2]}},
        alphas=tuple(tuple(float(i * 9 + j) / 7.0 for j in range(9)) for i in range(3)),
    )
    path = g.save(tmp_path / "sub" / "g.yaml")
    assert Genotype.load(path) == g
    assert Genotype.from_dict(g.to_dict()) == g
    assert yaml.safe_load(path.read_text()) == g.to_dict()
    assert not [p for p in path.parent.iterdir() if p.name != "g.yaml"]  # no temporary left behind


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "g.yaml"
    target.write_text("previous contents\n")
    g = Genotype(layers=(("h",),))

    def broken(fd):
        raise OSError("disk full")

    monkeypatch.setattr("scansearch.fileio.os.fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        g.save(target)
    assert target.read_text() == "previous contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["g.yaml"]


def test_saved_files_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        Genotype(layers=(("h",),)).save(tmp_path / "g.yaml")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "g.yaml").stat().st_mode) == 0o644


def test_presets_equal_localmamba_anchors():
    anchors = yaml.safe_load(ANCHORS.read_text())
    assert sorted(anchors) == Genotype.presets()
    for name, anchor in anchors.items():
        g = Genotype.preset(name)
        assert g.space == "local8" and g.model == name
        assert list(g.grid) == anchor["grid"]
        assert [list(layer) for layer in g.layers] == anchor["layers"]
    assert len(Genotype.preset("local_vim_tiny")) == 20
    assert len(Genotype.preset("local_vmamba_tiny")) == 2 + 2 + 9 + 2
    assert len(Genotype.preset("local_vmamba_small")) == 2 + 2 + 27 + 2


def test_unknown_preset():
    with pytest.raises(GenotypeError, match="unknown genotype preset 'nope'"):
        Genotype.preset("nope")


def test_none_layers_and_directions():
    g = Genotype.from_dict({"scansearch_genotype": 1, "space": "local8_none",
                            "layers": ["none", ["h", "v", "w2", "w7"]]})
    assert g.layers[0] == "none"
    assert g.directions == ((), ("h", "v", "w2", "w7"))


def test_user_space_file(tmp_path):
    space = tmp_path / "mine.yaml"
    space.write_text("name: mine\ncandidates: [hilbert, spiral, diag]\nk: 2\n")
    g = Genotype.from_dict({"scansearch_genotype": 1, "space": str(space), "layers": [["hilbert", "diag"]]})
    assert g.load_space().candidates == ("hilbert", "spiral", "diag")
    with pytest.raises(GenotypeError, match="layer 0: 1 directions, space 'mine' keeps k=2"):
        Genotype.from_dict({"scansearch_genotype": 1, "space": str(space), "layers": [["diag"]]})


def test_a_space_named_by_path_is_carried_inline_from_then_on(tmp_path):
    """Older genotypes name a user's space by its path: they load where the path exists, and
    what they write back carries the space whole, so it loads where the file is gone."""
    space = tmp_path / "mine.yaml"
    space.write_text("name: mine\ncandidates: [hilbert, spiral, diag]\nk: 2\n")
    old = tmp_path / "old.yaml"
    old.write_text(f"scansearch_genotype: 1\nspace: {space}\nlayers: [[hilbert, diag]]\n")
    g = Genotype.load(old)
    assert g.space_name == "mine"
    saved = yaml.safe_load(g.save(tmp_path / "new.yaml").read_text())
    assert saved["space"] == {"name": "mine", "candidates": ["hilbert", "spiral", "diag"], "k": 2}
    space.unlink()
    assert Genotype.load(tmp_path / "new.yaml") == g
    with pytest.raises(GenotypeError, match=r"old.yaml: space: .*mine.yaml: search-space file not found"):
        Genotype.load(old)


def test_inline_space_is_validated_like_a_space_file():
    doc = {"scansearch_genotype": 1, "space": {"name": "s", "candidates": ["h", "v", "w3"], "k": 2},
           "layers": [["h", "w3"]]}
    assert Genotype.from_dict(doc).load_space().candidates == ("h", "v", "w3")
    with pytest.raises(GenotypeError, match="g.yaml: space: candidate 'w0' is not a scan pattern"):
        Genotype.from_dict({**doc, "space": {"name": "s", "candidates": ["h", "w0"], "k": 1}}, where="g.yaml")
    with pytest.raises(GenotypeError, match="g.yaml: layer 0: pattern 'diag' is not a candidate of space 's'"):
        Genotype.from_dict({**doc, "layers": [["h", "diag"]]}, where="g.yaml")
    with pytest.raises(GenotypeError, match="'space' must be a shipped space's name or a mapping"):
        Genotype.from_dict({**doc, "space": 3})


def test_a_shipped_space_with_another_k_travels_inline():
    space = load_space("local8").keep(2)
    assert load_space("local8").ref == "local8" and space.ref != "local8"
    g = Genotype(layers=(("h", "w2"),), space=space.ref)
    assert g.to_dict()["space"]["k"] == 2 and Genotype.from_dict(g.to_dict()).load_space().k == 2


def test_load_directory_and_binary(tmp_path):
    with pytest.raises(GenotypeError, match="is a directory"):
        Genotype.load(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenotypeError, match="cannot read"):
        Genotype.load(binary)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
                     st.sampled_from(["h", "v_flip", "w7", "none", "local8", "bidir2", "x", "", "w0"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(
        ["scansearch_genotype", "layers", "space", "grid", "model", "alphas", "provenance", "other"]),
        inner, max_size=6)), max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_fuzz_structures_only_raise_genotype_error(data):
    try:
        g = Genotype.from_dict(data)
    except GenotypeError as err:
        assert str(err)
    else:
        assert Genotype.from_dict(g.to_dict()) == g


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("scansearch_genotype: 1\nlayers-[h,v]{}&*!|>'\"#%@`\t ?0.e")),
               max_size=120))
def test_fuzz_yaml_text_only_raises_genotype_error(text):
    try:
        Genotype.from_yaml(text, "fuzz.yaml")
    except GenotypeError as err:
        assert str(err).startswith("fuzz.yaml: ")
