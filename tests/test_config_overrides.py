"""``--set FIELD=VALUE`` on training configs."""

import dataclasses
import json

import pytest

from distill3d import __version__
from distill3d.cli import main
from distill3d.cli.config_overrides import apply_overrides
from distill3d.errors import UserError
from distill3d.world_models import text_to_image_training as train_text_to_image
from distill3d.world_models.classifier_training import ClassifierTrainConfig, tiny_config


def test_values_are_read_by_their_field_types():
    config = apply_overrides(ClassifierTrainConfig(), [
        "blur_probability=0.1", "steps=12", "net.widths=48,96", "recolour=permute",
        "skip_heldout_colour_shapes=true", "pool.refresh_every=25", "cameras.elevation_range=-5,55",
        "optim.lr=3e-4"])
    assert config.blur_probability == 0.1 and config.steps == 12
    assert config.net.widths == (48, 96) and config.recolour == "permute"
    assert config.skip_heldout_colour_shapes is True and config.pool.refresh_every == 25
    assert config.cameras.elevation_range == (-5.0, 55.0) and config.optim.lr == 3e-4
    assert config.pool.size == ClassifierTrainConfig().pool.size  # the rest keeps its value
    optional = apply_overrides(train_text_to_image.TextToImageTrainConfig(), ["min_snr_gamma=5"])
    assert optional.min_snr_gamma == 5.0
    assert apply_overrides(optional, ["min_snr_gamma=none"]).min_snr_gamma is None


def test_later_settings_win_and_the_input_is_not_changed():
    base = ClassifierTrainConfig()
    config = apply_overrides(base, ["steps=5", "steps=7"])
    assert config.steps == 7 and base.steps == ClassifierTrainConfig().steps


@pytest.mark.parametrize("text, says", [
    ("blur=0.1", "has no field 'blur'"),
    ("kind=x", "has no field 'kind'"),
    ("net.depth=3", "ClassifierNetConfig has no field 'depth'"),
    ("pool=3", "group of settings"),
    ("steps.x=1", "is a value"),
    ("steps=1.5", "integer"),
    ("optim.lr=fast", "number"),
    ("recolour=paint", "permute, mix"),
    ("skip_heldout_colour_shapes=maybe", "true or false"),
    ("cameras.elevation_range=1,2,3", "2 comma-separated"),
    ("recolour_fraction=2", "[0, 1]"),
    ("pool.shape_repeats=cube", "cannot be set"),
    ("steps", "FIELD=VALUE"),
])
def test_mistakes_are_user_errors_that_say_what_is_allowed(text, says):
    with pytest.raises(UserError, match="--set") as error:
        apply_overrides(ClassifierTrainConfig(), [text])
    assert says in str(error.value)


def test_cli_writes_the_setting_into_the_run_config(tmp_path, capsys):
    args = ["teacher", "train", "classifier", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a"), "--set", "blur_probability=0.25",
                        "--set", "pool.refresh_every=3"]) == 0
    written = json.loads((tmp_path / "a" / "config.json").read_text())
    assert written.pop("method") == "teacher train classifier" and written.pop("distill3d_version") == __version__
    expected = dataclasses.asdict(tiny_config())
    expected["blur_probability"], expected["steps"] = 0.25, 1
    expected["pool"]["refresh_every"] = 3
    assert written == json.loads(json.dumps(expected))
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "b"), "--set", "blur=1"]) == 2
    assert "no field 'blur'" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "c"), "--set", "net.resolution=32"]) == 2  # pool is 16x16
    assert "does not hold together" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_fields_of_one_config_move_together_and_the_last_one_wins():
    from distill3d.methods.consistent3d import Consistent3DConfig

    base = apply_overrides(Consistent3DConfig(), ["cameras.distance_max=2.0", "cameras.distance_min=1.5"])
    assert (base.cameras.distance_min, base.cameras.distance_max) == (1.5, 2.0)
    # 2.5 above the old maximum is fine because the new one comes in the same command
    far = apply_overrides(base, ["cameras.distance_min=2.5", "cameras.distance_max=3.0", "cds.grad_clip_start=2",
                                 "cds.grad_clip_end=8", "seed=3", "seed=4"])
    assert (far.cameras.distance_min, far.cameras.distance_max) == (2.5, 3.0)
    assert (far.cds.grad_clip_start, far.cds.grad_clip_end, far.seed) == (2.0, 8.0, 4)
    with pytest.raises(UserError, match="distance"):
        apply_overrides(base, ["cameras.distance_min=2.5"])  # the config still rejects a bad pair
    with pytest.raises(UserError, match="group of settings"):
        apply_overrides(base, ["cameras.distance_min=2.5", "cameras=3"])
