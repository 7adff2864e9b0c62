"""The image2points command line: dispatch and usage errors."""

import pytest

from backend.cli import BUILTINS, PLUGINS, main


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


@pytest.mark.parametrize("argv", [
    ["make-data", "--train", "-3"], ["make-data", "--views", "0"], ["make-data", "--workers", "0"],
    ["train", "--batch", "0"], ["train", "--lr", "nan"], ["train", "--minutes", "-1"],
    ["train", "--mirror", "2"], ["train", "--stage2-frac", "1.5"], ["train", "--w-novel", "-1"],
    ["train", "--threads", "0"], ["eval", "--max-test", "0"], ["pipeline", "--workers", "0"],
])
def test_nonsense_numbers_are_usage_errors(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {argv[1]}" in err and "Traceback" not in err
