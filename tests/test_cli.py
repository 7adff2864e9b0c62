"""The image2points command line: dispatch and usage errors."""

import pytest

from image2points.backend.cli import BUILTINS, PLUGINS, main


def test_an_unknown_command_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--data", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'evaluate'" in err
    for name in (*BUILTINS, *PLUGINS):
        assert f"'{name}'" in err, name


def _one_line_error(capsys, argv: list[str], *words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (argv, err)


def test_training_commands_fail_in_one_line(tmp_path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_error(capsys, ["eval", "--checkpoint", str(tmp_path / "none.pt"),
                             "--out", str(tmp_path / "ev")], "image2points eval:", "not found")
    _one_line_error(capsys, ["eval", "--checkpoint", str(afile), "--out", str(tmp_path / "ev")],
                    "image2points eval:", "model card")
    _one_line_error(capsys, ["eval", "--data", str(tmp_path / "nodata"),
                             "--out", str(tmp_path / "ev")], "no shards")
    _one_line_error(capsys, ["make-data", "--data", str(afile / "sub"), "--smoke"],
                    "image2points make-data:", "--data")
    _one_line_error(capsys, ["train", "--data", str(tmp_path), "--out", str(afile / "run")],
                    "image2points train:", "--out")  # checked before any data is read
    _one_line_error(capsys, ["pipeline", "--data", str(afile), "--smoke"],
                    "image2points pipeline:", "--data")


def _carded_garbage(tmp_path):
    """A file whose model card vouches for it but that holds no generator."""
    import hashlib
    import json

    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a torch file")
    (tmp_path / "garbage.card.json").write_text(
        json.dumps({"sha256": hashlib.sha256(bad.read_bytes()).hexdigest()}))
    return bad


def test_bad_checkpoints_gen_and_paths_fail_in_one_line(tmp_path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    nodata, run = str(tmp_path / "nodata"), str(tmp_path / "run")
    bad = str(_carded_garbage(tmp_path))
    _one_line_error(capsys, ["eval", "--checkpoint", bad, "--out", str(tmp_path / "ev")],
                    "image2points eval:", "garbage.pt", "not a torch weights file")
    _one_line_error(capsys, ["eval", "--data", nodata, "--out", str(afile / "ev")],
                    "image2points eval:", "--out")  # checked before the model or data load
    # --init and --gen are read before the data set, so a missing data set cannot hide them
    _one_line_error(capsys, ["train", "--data", nodata, "--out", run, "--init", str(tmp_path / "no.pt")],
                    "image2points train:", "--init", "not found")
    _one_line_error(capsys, ["train", "--data", nodata, "--out", run, "--init", str(afile)],
                    "image2points train:", "--init", "model card")
    _one_line_error(capsys, ["train", "--data", nodata, "--out", run, "--init", bad],
                    "image2points train:", "--init", "not a torch weights file")
    for gen in ("align=x", "width=0", "latent=nan", "nosuch=1"):
        _one_line_error(capsys, ["train", "--data", nodata, "--out", run, "--gen", gen],
                        "image2points train:", "--gen", gen.split("=")[0])
    _one_line_error(capsys, ["pipeline", "--data", str(afile), "--gen", "align=x"],
                    "image2points pipeline:", "--gen")  # before minutes of make-data
    _one_line_error(capsys, ["make-data", "--data", str(tmp_path / "d"), "--train", "0", "--val", "0",
                             "--test", "0"], "image2points make-data:", "nothing to make")
    _one_line_error(capsys, ["bench", "nosuch"], "image2points bench:", "nosuch")


# options that make each command stop at once (no data, nothing to make) should a nonsense number
# get through, so that such a test fails fast instead of training or rendering
_SAFE = {"make-data": ["--train", "0", "--val", "0", "--test", "0", "--data", "{tmp}/d"],
         "train": ["--data", "{tmp}/nodata", "--out", "{tmp}/run"],
         "eval": ["--checkpoint", "{tmp}/none.pt", "--data", "{tmp}/nodata", "--out", "{tmp}/ev"],
         "pipeline": ["--data", "{tmp}/afile", "--out", "{tmp}/afile/p"]}


@pytest.mark.parametrize("argv", [
    ["make-data", "--train", "-3"], ["make-data", "--views", "0"], ["make-data", "--workers", "0"],
    ["make-data", "--novel", "0"], ["make-data", "--test", "-1"],
    ["train", "--batch", "0"], ["train", "--lr", "nan"], ["train", "--lr", "inf"],
    ["train", "--minutes", "-1"], ["train", "--max-steps", "0"], ["train", "--mirror", "2"],
    ["train", "--stage2-frac", "1.5"], ["train", "--w-novel", "-1"], ["train", "--w-chamfer", "-1"],
    ["train", "--threads", "0"], ["train", "--seed", "-1"], ["train", "--max-shapes", "0"],
    ["eval", "--max-test", "0"], ["pipeline", "--workers", "0"], ["pipeline", "--minutes", "0"],
])
def test_nonsense_numbers_are_usage_errors(argv, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    safe = [a.format(tmp=tmp_path) for a in _SAFE[argv[0]]]
    with pytest.raises(SystemExit) as e:
        main([argv[0], *safe, *argv[1:]])  # the case's own option comes last and wins
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {argv[1]}" in err and "Traceback" not in err
