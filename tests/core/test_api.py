"""The promised public API and the import structure behind it."""
import subprocess
import sys


def test_models_are_built_saved_and_loaded_from_the_top_level(tmp_path):
    import torch

    from scansearch import build_model, load_model, save_model
    from scansearch import models

    assert (build_model, save_model, load_model) == (models.build_model, models.save_model, models.load_model)
    model = build_model("vim_micro", num_classes=3)
    loaded = load_model(save_model(model, tmp_path / "m"))
    images = torch.randn(1, 3, *model.cfg.image_hw)
    assert torch.equal(loaded(images), model(images))


def test_the_shared_errors_live_in_a_leaf_module():
    """scansearch.errors imports nothing of the package, and train/training_state import it,
    not each other."""
    import ast

    import scansearch.errors

    tree = ast.parse(open(scansearch.errors.__file__).read())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
    code = ("import sys, scansearch.errors as e\n"
            "import scansearch.training_state as ts\n"
            "assert 'scansearch.train' not in sys.modules\n"
            "from scansearch.train import TrainError\n"
            "assert TrainError is e.TrainError and ts.TrainError is e.TrainError\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
