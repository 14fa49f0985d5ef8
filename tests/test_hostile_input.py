"""Hostile and broken input, counted: genotype and space YAML, command-line arguments, run
folders, weights files and data folders, each mutated by hypothesis (a fixed, derandomised
profile, so every CI run draws the same cases).

Every case runs the command line in this process and must end in exit code 2 (or 0 where
the mutation left the input valid) with one line on stderr and no traceback, and must leave
every file it was given unchanged. The count of cases by kind is printed at the end of the
run (``hostile input cases: ...``) and at least ``MINIMUM`` run in all.
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


def pytest_hostile_counts() -> Counter:
    return COUNTS


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
bad_ints = st.sampled_from(["-1", "0", "x", "1.5", "", "1e999", "nan", "--", "-0", "99999999999999999999x"])
bad_floats = st.sampled_from(["-1", "nan", "inf", "x", "", "1e999", "-0.5", "2"])
unknown_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-./:", min_size=1, max_size=16).map(lambda s: "zz" + s)


@st.composite
def bad_command_lines(draw, missing: Path):
    command = draw(st.sampled_from(["search", "train", "eval", "derive", "export", "inspect", "genotype", "bench"]))
    if command == "search":
        option = draw(st.sampled_from(["--epochs", "--batch-size", "--seed", "--k", "--img-size", "--lr", "--space",
                                       "--model", "--data", "--searcher", "--trials", "--workers", "--set"]))
        value = {"--space": unknown_names, "--model": unknown_names, "--data": unknown_names.map(lambda s: str(missing / s)),
                 "--searcher": unknown_names, "--set": unknown_names, "--lr": bad_floats}.get(option, bad_ints)
        return ["search", option, draw(value), "--out", missing / "run", "--quiet"]
    if command == "train":
        source = draw(st.one_of(unknown_names, st.just("raum_micro")))
        if source == "raum_micro":  # a real preset: a bad option must stop it before any training
            option = draw(st.sampled_from(["--epochs", "--batch-size", "--lr", "--occlusion", "--labeled-ratio",
                                           "--tau", "--data", "--set", "--img-size"]))
            value = {"--lr": bad_floats, "--occlusion": bad_floats, "--labeled-ratio": bad_floats,
                     "--tau": bad_floats, "--data": unknown_names.map(lambda s: str(missing / s)),
                     "--set": unknown_names}.get(option, bad_ints)
            extra = ["--semi-supervised"] if option in ("--labeled-ratio", "--tau") and draw(st.booleans()) else []
            return ["train", source, option, draw(value), *extra, "--out", missing / "run", "--quiet"]
        return ["train", source, "--out", missing / "run", "--epochs", "1", "--quiet"]
    if command == "eval":
        return ["eval", missing / draw(unknown_names), *draw(st.sampled_from(
            [[], ["--occlusion", "2"], ["--levels", "x"], ["--batch-size", "0"], ["--calibration", "--plot", "/no/x.png"]]))]
    if command == "derive":
        return ["derive", draw(unknown_names), *draw(st.sampled_from([[], ["--json"], ["--img-size", "0"]]))]
    if command == "export":
        return ["export", missing / draw(unknown_names)]
    if command == "inspect":
        name = draw(st.one_of(unknown_names, st.just("h"), st.just("local8")))
        grid = draw(st.sampled_from(["0x4", "4x", "x", "-3", "4x4x4", "", "axb"])) if name in ("h", "local8") \
            else "4x4"
        return ["inspect", name, "--grid", grid]
    if command == "genotype":
        return ["genotype", draw(st.sampled_from(["validate", "show"])), missing / draw(unknown_names)]
    return ["bench", draw(st.sampled_from(["zz", "kernels --repeats -1", "model --batch 0"]))]


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_command_line_arguments(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("cli")
    missing = root / "missing"
    argv = data.draw(bad_command_lines(missing))
    argv = [part for a in argv for part in (str(a).split(" ") if str(a).startswith(("kernels ", "model ")) else [a])]
    run_case("command line", argv, [root])
    assert not missing.exists()  # nothing was created for a command that failed


# -- run folders -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """A finished one-epoch DARTS search on the digits (tiny model)."""
    root = tmp_path_factory.mktemp("search")
    run = root / "run"
    code = main(["search", "--space", "local8", "--model", "local_vim_micro", "--epochs", "1", "--set", "dim=8",
                 "--set", "depth=2", "--set", "d_state=4", "--out", str(run), "--quiet", "--verify-epochs", "0"])
    assert code == 0
    return run


RUN_FILES = ["config.yaml", "genotype.yaml", "summary.json", "checkpoint.pt", "alphas.json", "selection.json"]


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
                                                     json.dumps({"epochs": "x"}).encode(), b"[1, 2, 3]\n"])))
    elif how == "symlink_out":
        target = outside / f"{path.name}"
        shutil.copy(path, target)
        path.unlink()
        path.symlink_to(target)
    else:
        path.write_bytes(b"")
    return how


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_run_folders(search_run, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("runcase")
    run, outside = root / "run", root / "outside"
    shutil.copytree(search_run, run, symlinks=True)
    outside.mkdir()
    name = data.draw(st.sampled_from(RUN_FILES))
    how = break_file(run / name, data, outside)
    command = data.draw(st.sampled_from(["export", "train"] + (["resume"] if name in ("config.yaml", "checkpoint.pt")
                                                                 else [])))
    if command == "export":
        argv = ["export", run, "-o", root / "exported.yaml"]
    elif command == "train":
        argv = ["train", run, "--out", root / "model", "--epochs", "1", "--quiet"]
    else:
        argv = ["search", "--resume", "--out", run, "--quiet"]
    # a broken file the command does not read may leave the command working: then it must not
    # have changed the files it was given (its outputs go elsewhere)
    reads_it = (command in ("export", "train") and name == "genotype.yaml") or (command == "resume")
    if not reads_it or how in ("delete",) and name != "genotype.yaml" and command != "resume":
        return  # nothing hostile reaches this command; counted elsewhere
    code, _ = run_case("run folder", argv, [run, outside], allow_ok=False)
    assert not (root / "exported.yaml").exists() and not (root / "model" / "weights.safetensors").exists()


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


# -- the count ---------------------------------------------------------------------------------
def test_zz_enough_cases_ran(request):
    """Runs last in this file: the cases above add up to at least MINIMUM (when all ran)."""
    ran = {item.name for item in request.session.items if item.module is request.module}
    if len(ran) < 7:
        pytest.skip("only part of the hostile-input suite was selected")
    total = sum(COUNTS.values())
    print(f"\nhostile input cases: {total} ({', '.join(f'{k} {v}' for k, v in sorted(COUNTS.items()))})")
    assert total >= MINIMUM, dict(COUNTS)
