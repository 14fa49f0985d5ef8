"""save_model / load_model: genotype, config and safetensors weights; clear errors, no pickle."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO
from scansearch.models import ModelError, build_model, load_model, save_model



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("local_vim_micro", num_classes=10, in_chans=1)
    save_model(model, tmp_path / "model")
    return model, tmp_path / "model"


def test_round_trip(saved, tmp_path):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "genotype.yaml", "weights.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind
    loaded = load_model(folder)
    images = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(images), model(images))
    assert loaded.config == model.config and loaded.genotype.layers == model.genotype.layers
    assert yaml.safe_load((folder / "config.yaml").read_text())["family"] == "local_vim"


@pytest.mark.parametrize("name", ["vim_micro", "vmamba_micro", "local_vmamba_micro", "mambaout_micro"])
def test_round_trip_every_family(name, tmp_path):
    model = build_model(name, num_classes=3)
    loaded = load_model(save_model(model, tmp_path / name))
    images = torch.randn(1, 3, *model.cfg.image_hw)
    assert torch.equal(loaded(images), model(images))


def test_saving_into_an_existing_folder_replaces_only_our_files(saved):
    _, folder = saved
    (folder / "notes.txt").write_text("keep me")
    other = build_model("local_vim_micro", num_classes=10, in_chans=1)
    save_model(other, folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    images = torch.randn(1, 1, 8, 8)
    assert torch.equal(load_model(folder)(images), other(images))
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_a_save_that_fails_halfway_leaves_the_old_model_whole(saved, monkeypatch):
    """The three files are written into a sibling folder that then takes the target's place:
    a crash after the weights, before the genotype, leaves the old model as it was."""
    model, folder = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = build_model("local_vim_micro", num_classes=10, in_chans=1, dim=16)

    def crash(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("scansearch.genotype.Genotype.save", crash)
    with pytest.raises(OSError, match="No space left"):
        save_model(other, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == ["model"]
    images = torch.randn(1, 1, 8, 8)
    assert torch.equal(load_model(folder)(images), model(images))


def test_a_crash_between_renames_never_mixes_two_models(saved, monkeypatch):
    """A crash at the second rename into the model folder: what loads is the old model or the
    new one, whole, never the new weights beside the old config."""
    model, folder = saved
    other = build_model("local_vim_micro", num_classes=10, in_chans=1, dim=16)
    real_replace, into_target = os.replace, []

    def crashing_replace(src, dst):
        if Path(dst) == folder or Path(dst).parent == folder:
            into_target.append(dst)
            if len(into_target) == 2:
                raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    try:
        save_model(other, folder)
    except OSError:
        pass
    monkeypatch.undo()
    loaded = load_model(folder)  # raises when the weights are the new model's and the config the old one's
    expected = model if loaded.config == model.config else other
    assert loaded.config == expected.config and loaded.genotype == expected.genotype
    images = torch.randn(1, 1, 8, 8)
    assert torch.equal(loaded(images), expected(images))


def test_a_folder_that_is_not_a_saved_model_is_never_overwritten(tmp_path):
    model = build_model("vim_micro", num_classes=3)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ModelError, match="mine: not empty and not a saved model"):
        save_model(model, mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    partial = tmp_path / "partial"  # one of our names is not enough
    partial.mkdir()
    (partial / "config.yaml").write_text("my own config")
    with pytest.raises(ModelError, match="not a saved model"):
        save_model(model, partial)
    assert (partial / "config.yaml").read_text() == "my own config"
    (tmp_path / "empty").mkdir()
    assert load_model(save_model(model, tmp_path / "empty")).config == model.config
    run = tmp_path / "run"  # a training run's folder: the model lands beside the checkpoint
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"state")
    save_model(model, run)
    assert (run / "checkpoint.pt").read_bytes() == b"state" and (run / "weights.safetensors").is_file()


def test_every_file_and_the_folder_get_the_modes_of_a_plain_open(tmp_path):
    import stat

    old = os.umask(0o027)
    try:
        folder = save_model(build_model("vim_micro", num_classes=3), tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {
        "config.yaml": 0o640, "genotype.yaml": 0o640, "weights.safetensors": 0o640}


def test_load_in_a_process_without_searchers(saved):
    _, folder = saved
    code = ("import sys, torch\n"
            "from scansearch.models import load_model\n"
            f"model = load_model({str(folder)!r})\n"
            "assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)\n"
            "assert 'scansearch.searchers' not in sys.modules, sorted(m for m in sys.modules if 'search' in m)\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _load_error(folder) -> str:
    with pytest.raises(ModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_truncated_weights(saved):
    _, folder = saved
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "corrupt or truncated weights file" in _load_error(folder)


def test_garbage_and_pickled_weights_are_refused(saved, tmp_path):
    _, folder = saved
    weights = folder / "weights.safetensors"
    weights.write_bytes(os.urandom(64))
    assert "corrupt or truncated" in _load_error(folder)
    marker = tmp_path / "unpickled"

    class Payload:  # would create the marker file if anything unpickled it
        def __reduce__(self):
            return (Path.touch, (marker,))

    weights.write_bytes(pickle.dumps({"x": Payload()}))
    assert "corrupt or truncated" in _load_error(folder)
    assert not marker.exists()


def test_weights_of_another_model(saved, tmp_path):
    _, folder = saved
    save_model(build_model("vim_micro", num_classes=10, in_chans=1), tmp_path / "other")
    os.replace(tmp_path / "other" / "weights.safetensors", folder / "weights.safetensors")
    assert "weights do not match the config" in _load_error(folder)


def test_weights_with_a_wrong_shape(saved, tmp_path):
    _, folder = saved
    save_model(build_model("local_vim_micro", num_classes=7, in_chans=1), tmp_path / "other")
    os.replace(tmp_path / "other" / "weights.safetensors", folder / "weights.safetensors")
    assert "head.weight has shape (7, 32), the model expects (10, 32)" in _load_error(folder)


def test_bad_folders_and_configs(saved, tmp_path):
    _, folder = saved
    assert "not a model directory" in _load_error(tmp_path / "nowhere")
    config = folder / "config.yaml"
    config.write_text(config.read_text() + "wings: 2\n")
    assert "unknown field(s) wings" in _load_error(folder)
    config.write_text("family: resnet\n")
    assert "unknown model family 'resnet'" in _load_error(folder)
    config.write_text("family: [unclosed\n")
    assert "cannot read" in _load_error(folder)
    (folder / "genotype.yaml").unlink()
    assert "missing genotype.yaml" in _load_error(folder)


def test_a_genotype_that_would_not_load_is_refused_at_save(tmp_path):
    from scansearch import Genotype

    model = build_model(Genotype(layers=(("h", "v"),) * 4, model="local_vim_micro", space="local8"))
    with pytest.raises(ModelError, match="2 directions, space 'local8' keeps k=4"):
        save_model(model, tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_only_built_models_can_be_saved(tmp_path):
    with pytest.raises(ModelError, match="needs a model made by build_model"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelError, match="not a directory"):
        save_model(build_model("vim_micro"), tmp_path / "file")
