"""Hostile and broken input, counted: genotype and space YAML, command-line arguments, run
folders, weights files and data folders, each mutated by hypothesis (a fixed, derandomised
profile, so every CI run draws the same cases).

Every case runs the command line in this process and must end in exit code 2 (or 0 where
the mutation left the input valid) with one line on stderr and no traceback, and must leave
every file it was given unchanged. The count of cases by kind is printed at the end of the
run (``hostile input cases: ...``) and at least ``MINIMUM`` run in all. Set
``SCANSEARCH_FUZZ_TRACE=FILE`` to log every case's command line to FILE.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scansearch.cli import main

pytestmark = pytest.mark.slow
COUNTS: Counter = Counter()
MINIMUM = 1000
FUZZ = settings(max_examples=200, derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])
TINY_MODEL = dict(patch_size=1, dims=(8, 8, 8), depths=(1, 1, 1), d_state=4)


# -- the oracle --------------------------------------------------------------------------------
def snapshot(*roots: Path) -> dict[str, str]:
    """Every file below the roots (symlinks as their target text), with a hash of its bytes."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            if path.is_symlink():
                out[str(path)] = "link:" + os.readlink(path)
            elif path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                out[str(path)] = "dir"
    return out


def run_case(kind: str, argv: list, watch: list[Path], allow_ok: bool = False) -> tuple[int, str]:
    """Run ``scansearch ARGV`` here; exit 2 with one clean line (or 0 if ``allow_ok``), no file
    under ``watch`` changed, added or removed."""
    before = snapshot(*watch)
    if os.environ.get("SCANSEARCH_FUZZ_TRACE"):
        with open(os.environ["SCANSEARCH_FUZZ_TRACE"], "a") as trace:
            trace.write(f"{kind}: {[str(a) for a in argv]}\n")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    text = err.getvalue()
    COUNTS[kind] += 1
    assert "Traceback" not in text and "Traceback" not in out.getvalue(), text
    if code == 0 and allow_ok:
        pass
    else:
        assert code == 2, (kind, argv, code, text[-2000:])
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("scansearch"), (kind, argv, text)
    assert snapshot(*watch) == before, (kind, argv, "a file changed")
    return code, text


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("scansearch.data.folders.default_workers", lambda: 0)  # no decoding processes
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- values hypothesis draws from --------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
NASTY_TEXT = ["", "\x00", "!!python/object/apply:os.system ['true']", "- - -", "{", "a: [", "key: &a [*a]",
              "\ufeffversion: 1", "version: 1\nlayers: !!binary aGVsbG8=", "*undefined_alias", ": :",
              "layers:\n\t- h", "%YAML 9.9\n---\n", "? [a, b]\n: c"]


def mutate_mapping(base: dict, data) -> object:
    """``base`` with a key dropped, replaced, added or retyped; or something else altogether."""
    doc = json.loads(json.dumps(base))
    how = data.draw(st.sampled_from(["drop", "replace", "add", "retype_list", "whole"]))
    keys = list(doc)
    if how == "drop":
        doc.pop(data.draw(st.sampled_from(keys)))
    elif how == "replace":
        doc[data.draw(st.sampled_from(keys))] = data.draw(json_values)
    elif how == "add":
        doc[data.draw(st.text(min_size=1, max_size=8))] = data.draw(json_values)
    elif how == "retype_list":
        key = data.draw(st.sampled_from([k for k in keys if isinstance(doc[k], list)] or keys))
        value = doc[key]
        if isinstance(value, list) and value:
            value[data.draw(st.integers(0, len(value) - 1))] = data.draw(json_values)
        else:
            doc[key] = data.draw(json_values)
    else:
        return data.draw(json_values)
    return doc


def yaml_bytes(data, base: dict) -> bytes:
    """A YAML document: a mutated mapping, nasty text, random bytes or a truncated valid file."""
    how = data.draw(st.sampled_from(["mapping"] * 4 + ["nasty", "bytes", "truncated"]))
    if how == "mapping":
        return yaml.safe_dump(mutate_mapping(base, data), allow_unicode=True).encode("utf-8")
    if how == "nasty":
        return data.draw(st.sampled_from(NASTY_TEXT)).encode("utf-8")
    if how == "bytes":
        return data.draw(st.binary(max_size=64))
    text = yaml.safe_dump(base).encode()
    return text[:data.draw(st.integers(0, len(text) - 1))]


# -- genotype YAML -----------------------------------------------------------------------------
GENOTYPE = {"version": 1, "model": "local_vim_micro", "space": "local8", "grid": [8, 8],
            "layers": [["h", "h_flip", "w2", "w2_flip"]] * 4}


@FUZZ
@given(data=st.data())
def test_genotype_yaml(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("genotype")
    path = root / "g.yaml"
    path.write_bytes(yaml_bytes(data, GENOTYPE))
    run_case("genotype yaml", ["genotype", "validate", path], [root], allow_ok=True)


# -- space YAML --------------------------------------------------------------------------------
SPACE = {"name": "mine", "description": "rows and windows", "candidates": ["h", "h_flip", "w2", "w2_flip"], "k": 2}


@FUZZ
@given(data=st.data())
def test_space_yaml(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("space")
    path = root / "s.yaml"
    path.write_bytes(yaml_bytes(data, SPACE))
    run_case("space yaml", ["inspect", path, "--grid", "4x4"], [root], allow_ok=True)


# -- command-line arguments --------------------------------------------------------------------
# every value below is wrong for its option, so no case can start real work
not_positive = st.sampled_from(["-1", "0", "-0", "x", "1.5", "", "nan", "--", "99999999999999999999x", "1e3"])
not_an_int = st.sampled_from(["x", "1.5", "", "nan", "--", "0x10", "1_0_"])
not_a_rate = st.sampled_from(["-1", "nan", "inf", "x", "", "2", "1.5", "-0.5", "1e999"])
not_an_lr = st.sampled_from(["-1", "nan", "inf", "x", "", "0", "-0.5", "1e999"])
unknown_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-.", min_size=1, max_size=16).map(lambda s: "zz" + s)
SEARCH_OPTIONS = {"--epochs": not_positive, "--batch-size": not_positive, "--img-size": not_positive,
                  "--trials": not_positive, "--workers": not_positive, "--seed": not_an_int, "--lr": not_an_lr,
                  "--space": unknown_names, "--model": unknown_names, "--searcher": unknown_names,
                  "--set": unknown_names, "--heartbeat": not_an_lr,
                  "--storage": st.sampled_from(["nowhere", "mysql://u@127.0.0.1:1/x", "postgresql://u:pw@127.0.0.1:1/x",
                                                "sqlite:////no/such/dir/s.db", "postgresql://", "://",
                                                "/no/such/dir/s.journal"])}
OPTUNA_OPTIONS = ("--heartbeat", "--storage")  # asked of an Optuna search (DARTS refuses them first)
TRAIN_OPTIONS = {"--epochs": not_positive, "--batch-size": not_positive, "--img-size": not_positive,
                 "--seed": not_an_int, "--lr": not_an_lr, "--occlusion": not_a_rate, "--set": unknown_names,
                 "--model": unknown_names}
SEMI_OPTIONS = {"--labeled-ratio": not_a_rate, "--tau": not_a_rate, "--mc-samples": not_positive,
                "--unlabeled-ratio": not_positive, "--uncertainty-quantile": not_a_rate}


@st.composite
def bad_command_lines(draw, missing: Path):
    command = draw(st.sampled_from(["search", "train", "semi", "eval", "derive", "export", "inspect", "genotype",
                                    "bench"]))
    if command == "search":
        option = draw(st.sampled_from(sorted(SEARCH_OPTIONS)))
        optuna = ["--searcher", "random"] if option in OPTUNA_OPTIONS else []
        if option == "--storage" and draw(st.booleans()):
            optuna = ["--join"]  # a study on another machine's database that cannot be reached
        return ["search", *optuna, option, draw(SEARCH_OPTIONS[option]), "--out", missing / "run", "--quiet"]
    if command == "train":
        if draw(st.booleans()):
            return ["train", draw(unknown_names), "--out", missing / "run", "--epochs", "1", "--quiet"]
        option = draw(st.sampled_from(sorted(TRAIN_OPTIONS)))
        return ["train", "raum_micro", option, draw(TRAIN_OPTIONS[option]), "--out", missing / "run", "--quiet"]
    if command == "semi":
        option = draw(st.sampled_from(sorted(SEMI_OPTIONS)))
        ratio = [] if option == "--labeled-ratio" else ["--labeled-ratio", "0.1"]
        return ["train", "raum_micro", "--semi-supervised", *ratio, option, draw(SEMI_OPTIONS[option]),
                "--out", missing / "run", "--quiet"]
    if command == "eval":
        return ["eval", missing / draw(unknown_names), *draw(st.sampled_from(
            [[], ["--occlusion", "2"], ["--levels", "x"], ["--batch-size", "0"], ["--calibration", "--plot", "/no/x.png"],
             ["--occlusion-sweep", "--levels", "0,9"], ["--mc-samples", "-3"]]))]
    if command == "derive":
        return ["derive", draw(unknown_names), *draw(st.sampled_from([[], ["--json"], ["--img-size", "0"]]))]
    if command == "export":
        return ["export", missing / draw(unknown_names)]
    if command == "inspect":
        if draw(st.booleans()):
            return ["inspect", draw(unknown_names), "--grid", "4x4"]
        return ["inspect", draw(st.sampled_from(["h", "local8", "w2"])), "--grid",
                draw(st.sampled_from(["0x4", "4x", "x", "-3", "4x4x4", "", "axb", "4x0"]))]
    if command == "genotype":
        return ["genotype", draw(st.sampled_from(["validate", "show"])), missing / draw(unknown_names)]
    return ["bench", *draw(st.sampled_from([["zz"], ["kernels", "--zz"], ["model", "--zz", "1"], []]))]


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_command_line_arguments(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("cli")
    missing = root / "missing"
    argv = data.draw(bad_command_lines(missing))
    if argv == ["bench"]:
        argv = ["bench", "nothing-here"]
    run_case("command line", argv, [root])
    assert not missing.exists()  # nothing was created for a command that failed


# -- run folders -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """A finished one-epoch DARTS search on the digits (tiny model)."""
    root = tmp_path_factory.mktemp("search")
    run = root / "run"
    code = main(["search", "--space", "local8", "--model", "local_vim_micro", "--epochs", "1", "--set", "dim=8",
                 "--set", "depth=2", "--set", "d_state=4", "--out", str(run), "--quiet"])
    assert code == 0
    return run


def break_file(path: Path, data, outside: Path) -> str:
    how = data.draw(st.sampled_from(["delete", "truncate", "bytes", "foreign", "symlink_out", "empty"]))
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[:data.draw(st.integers(0, max(0, len(raw) - 1)))])
    elif how == "bytes":
        path.write_bytes(data.draw(st.binary(min_size=1, max_size=256)))
    elif how == "foreign":
        path.write_bytes(data.draw(st.sampled_from([b"\x89PNG\r\n\x1a\n" + bytes(40), b"PK\x03\x04" + bytes(30),
                                                     b"[1, 2, 3]\n", b"scansearch_run: 99\n"])))
    elif how == "symlink_out":
        target = outside / path.name
        shutil.copy(path, target)
        path.unlink()
        path.symlink_to(target)
    else:
        path.write_bytes(b"")
    return how


# (the file broken, the command that reads it); a link out of the folder is refused by every command
RUN_CASES = [("genotype.yaml", "export"), ("genotype.yaml", "train"), ("config.yaml", "export"),
             ("config.yaml", "train"), ("config.yaml", "resume"), ("checkpoint.pt", "resume")]
LINKED = ["summary.json", "alphas.json", "selection.json", "log.txt"]


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_run_folders(search_run, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("runcase")
    run, outside = root / "run", root / "outside"
    shutil.copytree(search_run, run, symlinks=True)
    outside.mkdir()
    name, command = data.draw(st.sampled_from(RUN_CASES + [(n, c) for n in LINKED for c in ("export", "train")]))
    if name in LINKED:
        target = outside / name
        shutil.copy(run / name, target)
        (run / name).unlink()
        (run / name).symlink_to(target)
        how = "symlink_out"
    else:
        how = break_file(run / name, data, outside)
    if (name, how) == ("checkpoint.pt", "delete"):
        return  # a search that died in its first epoch: resuming starts it again (tested elsewhere)
    if name == "config.yaml" and command != "resume" and how not in ("delete", "symlink_out"):
        return  # export and train read a run's genotype, not its config: nothing hostile reaches them
    argv = {"export": ["export", run, "-o", root / "exported.yaml"],
            "train": ["train", run, "--out", root / "model", "--epochs", "1", "--quiet"],
            "resume": ["search", "--resume", "--out", run, "--quiet"]}[command]
    # a YAML file cut at a line end can still be a whole document: then the command works
    code, _ = run_case("run folder", argv, [run, outside], allow_ok=how == "truncate" and name.endswith(".yaml"))
    if code != 0:
        assert not (root / "exported.yaml").exists() and not (root / "model").exists()


# -- weights files -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from scansearch import build_model, save_model

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("model")
    model = build_model("raum_micro", num_classes=10, img_size=8, in_chans=1, **TINY_MODEL)
    save_model(model, root / "m")
    (root / "m" / "data.json").write_text(json.dumps({"seed": 0}))
    return root / "m"


def safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def broken_weights(data, good: dict[str, torch.Tensor], path: Path) -> bytes:
    raw = path.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "bytes", "pickle", "torch_save", "shape", "dtype", "missing",
                                     "extra", "header", "empty"]))
    name = data.draw(st.sampled_from(sorted(good)))
    if how == "truncate":
        return raw[:data.draw(st.integers(0, len(raw) - 1))]
    if how == "bytes":
        return data.draw(st.binary(min_size=1, max_size=512))
    if how == "pickle":
        return pickle.dumps({"weights": [1, 2, 3]})
    if how == "torch_save":
        buffer = io.BytesIO()
        torch.save(good, buffer)
        return buffer.getvalue()
    if how == "shape":
        bad = dict(good)
        bad[name] = torch.zeros(*[s + 1 for s in good[name].shape] or [2])
        return safetensors_bytes(bad)
    if how == "dtype":
        bad = dict(good)
        bad[name] = good[name].to(data.draw(st.sampled_from([torch.int64, torch.int8, torch.bool, torch.uint8])))
        return safetensors_bytes(bad)
    if how == "missing":
        return safetensors_bytes({k: v for k, v in good.items() if k != name})
    if how == "extra":
        return safetensors_bytes({**good, f"zz_{name}": torch.zeros(3)})
    if how == "header":
        header_len = struct.unpack("<Q", raw[:8])[0]
        return struct.pack("<Q", data.draw(st.sampled_from([header_len * 1000, 2**63, 0, header_len - 1]))) + raw[8:]
    return b""


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_weights_files(model_dir, tmp_path_factory, data):
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("weights")
    model = root / "m"
    shutil.copytree(model_dir, model)
    good = load_file(str(model_dir / "weights.safetensors"))
    target = data.draw(st.sampled_from(["weights.safetensors"] * 4 + ["config.yaml", "genotype.yaml"]))
    if target == "weights.safetensors":
        (model / target).write_bytes(broken_weights(data, good, model / target))
    else:
        base = yaml.safe_load((model / target).read_text())
        (model / target).write_bytes(yaml_bytes(data, base))
    run_case("weights file", ["eval", model, "--json"], [root], allow_ok=target != "weights.safetensors")


# configs that once crashed the loader or made it allocate without end
KNOWN_BAD_CONFIGS = [{"family": [1, 2]}, {"family": {"a": 1}}, {"d_state": 10**12}, {"ssm_ratio": 10**12},
                     {"dt_rank": 10**12}, {"regions": 10**12}, {"depths": [10**9, 1, 1]}, {"dims": [2**40, 8, 8]},
                     {"img_size": 10**9}, {"mc_dropout": 1.0}, {"num_classes": 10**12}]


@pytest.mark.parametrize("change", KNOWN_BAD_CONFIGS, ids=[next(iter(c)) for c in KNOWN_BAD_CONFIGS])
def test_known_bad_model_configs(model_dir, tmp_path, change):
    model = tmp_path / "m"
    shutil.copytree(model_dir, model)
    config = yaml.safe_load((model / "config.yaml").read_text())
    (model / "config.yaml").write_text(yaml.safe_dump({**config, **change}))
    run_case("model config", ["eval", model, "--json"], [tmp_path])


# -- data folders ------------------------------------------------------------------------------
def write_image(path: Path, size: tuple[int, int], colour: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (colour, 40, 200 - colour)).save(path)


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory):
    from scansearch import build_model, save_model

    pytest.importorskip("PIL")
    root = tmp_path_factory.mktemp("folder_model")
    torch.manual_seed(0)
    save_model(build_model("raum_micro", num_classes=2, img_size=8, in_chans=3, **TINY_MODEL), root / "m")
    return root / "m"


@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_data_folders(folder_model, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("data")
    folder = root / "pets"
    for split in ("train", "test"):
        for c, name in enumerate(("cat", "dog")):
            for i in range(2):
                write_image(folder / split / name / f"{i}.png", (10, 10), 100 * c + i)
    outside = root / "outside"
    outside.mkdir()
    how = data.draw(st.sampled_from(["empty_class", "unreadable", "zero_bytes", "text_as_image", "dir_as_image",
                                     "extra_class", "no_classes", "symlink_out", "mixed_sizes"]))
    split = data.draw(st.sampled_from(["train", "test"]))
    cls = data.draw(st.sampled_from(["cat", "dog"]))
    victim = folder / split / cls / "0.png"
    if how == "empty_class":
        shutil.rmtree(folder / split / cls)
        (folder / split / cls).mkdir()
    elif how == "unreadable":
        victim.write_bytes(data.draw(st.binary(min_size=1, max_size=200)))
    elif how == "zero_bytes":
        victim.write_bytes(b"")
    elif how == "text_as_image":
        victim.write_text("this is not an image\n")
    elif how == "dir_as_image":
        victim.unlink()
        (victim.parent / "9.png").mkdir()
        (victim.parent / "9.png" / "x.png").write_bytes(b"nope")
    elif how == "extra_class":
        write_image(folder / split / "eel" / "0.png", (10, 10), 5)
    elif how == "no_classes":
        shutil.rmtree(folder / split)
        (folder / split).mkdir()
    elif how == "symlink_out":
        write_image(outside / "x.png", (10, 10), 7)
        victim.unlink()
        victim.symlink_to(outside / "x.png")
    else:
        write_image(victim, tuple(data.draw(st.tuples(st.integers(1, 64), st.integers(1, 64)))), 9)
    # a readable image of another size is fine (it is resized); everything else must be refused
    ok = how == "mixed_sizes"
    run_case("data folder", ["eval", folder_model, "--data", folder, "--split", "test", "--batch-size", "2",
                             "--json"], [root], allow_ok=ok)


def test_a_config_cannot_steer_a_resumed_study_out_of_the_run_folder(search_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(search_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["settings"].update(searcher="tpe", storage=str(tmp_path / "elsewhere.journal"))
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _, text = run_case("run folder", ["search", "--resume", "--out", run, "--quiet"], [tmp_path])
    assert "outside the run folder" in text and not (tmp_path / "elsewhere.journal").exists()


def test_a_search_that_died_in_its_first_epoch_resumes_from_the_start(search_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(search_run, run)
    for name in ("checkpoint.pt", "genotype.yaml", "summary.json"):
        (run / name).unlink()
    assert main(["search", "--resume", "--out", str(run), "--quiet"]) == 0
    assert (run / "genotype.yaml").is_file() and (run / "checkpoint.pt").is_file()


# -- the count ---------------------------------------------------------------------------------
def test_zz_enough_cases_ran(request):
    """Runs last in this file: the cases above add up to at least MINIMUM (when all ran)."""
    ran = {item.originalname for item in request.session.items if item.module is request.module}
    if ran != {name for name in dir(request.module) if name.startswith("test_")}:
        pytest.skip("only part of the hostile-input suite was selected")
    assert sum(COUNTS.values()) >= MINIMUM, dict(COUNTS)  # conftest prints the count by kind
