"""The command line as a whole: a quick ``--help``, every option described, options checked before any work."""

import argparse
import subprocess
import sys
import time

import pytest

from distill3d.cli import COMMANDS, build_parser, main


def test_top_level_help_lists_every_command_without_importing_torch():
    code = ("import sys, time; t = time.perf_counter(); from distill3d.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, time.perf_counter() - t)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    whole = time.perf_counter() - start
    *help_lines, last = out.strip().splitlines()
    imported_torch, seconds = last.split()
    assert imported_torch == "False"
    assert all(name in "\n".join(help_lines) for name in COMMANDS)
    # measured here: about 0.05 s in the process and 0.1 s for the whole interpreter
    assert float(seconds) < 1.0 and whole < 5.0, (seconds, whole)


def _options(command: list[str]) -> list[argparse.Action]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command[0]]
    return [a for a in sub._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("command", [["text-to-3d"], ["fit"]])
def test_every_option_of_a_method_is_described_with_its_default(command):
    options = _options(command)
    assert len(options) > 40
    for action in options:
        assert action.help and len(action.help) > 12, action.option_strings
    help_text = {a.option_strings[0]: a.help for a in options}
    assert "(default: " not in help_text["--steps"] or command == ["fit"]  # text-to-3d: by representation
    if command == ["text-to-3d"]:
        assert "nerf 500, gaussians 800" in help_text["--steps"]
        assert help_text["--scene.num-samples"].endswith("(default: 32)")  # the method's own default
        assert help_text["--cds.cfg-start"].endswith("(default: 50.0)")
        assert not any(name in ("--delta", "--Delta") for a in options for name in a.option_strings)
    else:
        assert help_text["--scene.num-samples"].endswith("(default: 96)")


def test_text_to_3d_options_reach_the_nested_config(tmp_path, monkeypatch):
    from distill3d.methods import consistent3d

    seen = {}
    monkeypatch.setattr(consistent3d, "text_to_3d", lambda prompt, config, out, resume: seen.update(config=config)
                        or {"prompt": prompt, "steps": config.steps, "seconds": 0, "final_loss": 0})
    assert main(["text-to-3d", "a red striped torus", "--out", str(tmp_path / "r"), "--representation", "gaussians",
                 "--cds.t-max", "0.6", "--sds.t-max", "0.9", "--cameras-per-step", "4", "--no-fixed-noise"]) == 0
    config = seen["config"]
    assert config.scene.representation == "gaussians" and config.steps == 800  # resolved by representation
    assert (config.cds.t_max, config.sds.t_max, config.cameras.cameras_per_step) == (0.6, 0.9, 4)
    assert config.cds.fixed_noise is False and config.scene.num_samples == 32 and config.optim.grid_lr == 0.05


@pytest.mark.parametrize("argv, says", [
    (["teacher", "sample", "--prompt", "a red plain cube", "--steps", "0", "--out", "x.png"], "--steps"),
    (["teacher", "sample", "--prompt", "a red plain cube", "--count", "0", "--out", "x.png"], "--count"),
    (["teacher", "sample", "--prompt", "a red plain cube", "--out", "x.jpg"], ".png"),
    (["teacher", "sample-multiview", "--prompt", "a red plain cube", "--steps", "0", "--out", "x.png"], "--steps"),
    (["teacher", "eval", "classifier", "--count", "0", "--out", "x.json"], "--count"),
    (["text-to-3d", "a red striped torus", "--steps", "0", "--out", "r"], "--steps"),
    (["text-to-3d", "a red striped torus", "--cameras.distance-min", "4", "--out", "r"], "distance"),
    (["text-to-3d", "a red striped torus", "--representation", "voxels", "--out", "r"], "nerf or gaussians"),
    (["fit", "data", "--scene.voxels.resolution", "1", "--out", "r"], "resolution"),
])
def test_options_are_checked_before_any_work(tmp_path, monkeypatch, capsys, argv, says):
    from distill3d.world_models import teachers

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(teachers.WorldTextToImageTeacher, "from_pretrained", no_loading)
    monkeypatch.setattr(teachers.WorldMultiViewTeacher, "from_pretrained", no_loading)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written
