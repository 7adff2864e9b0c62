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
