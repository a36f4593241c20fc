"""Every config's flags and files come from its fields (`deepfake_detector.settings`): the flags keep their
names and defaults, and reach the config as given; a YAML or JSON file loads the same way for every
file-read config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import pytest

from deepfake_detector.cli.main import build_parser
from deepfake_detector.cli.ray_scoring import ray_scoring_config
from deepfake_detector.inference.ray_scoring import RayScoringConfig
from deepfake_detector.serving.config import ServeConfig
from deepfake_detector.settings import add_flags, build_from_flags, file_flag_values, flag_name, load_config
from deepfake_detector.training.config import ConfigError, TrainConfig, load_train_config
from deepfake_detector.training.head import HeadTrainingConfig


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_serve_has_a_flag_per_field_with_the_fields_defaults():
    args = _parse("serve")
    for item in fields(ServeConfig):
        assert flag_name(item) == "--" + item.name.replace("_", "-")
        assert getattr(args, item.name) == item.default
    assert _parse("serve", "--queue-size", "3", "--max-batch-wait-ms", "2.5").queue_size == 3


def test_ray_flags_become_the_config_one_retries_flag_for_both_counts():
    args = _parse("predict", "x", "-o", "out", "--batch-size", "4", "--ray-retries", "-1", "--quiet", "--ray")
    assert ray_scoring_config(args) == RayScoringConfig(
        batch_size=4, max_restarts=-1, max_task_retries=-1, verbose=False
    )
    args = _parse(
        "predict", "x", "--ray=ray://head:10001", "--ray-actors", "2", "--ray-gpus-per-actor", "0.5"
    )
    assert (args.ray, args.ray_actors, args.ray_gpus_per_actor, args.rows_per_shard) == (
        "ray://head:10001",
        2,
        0.5,
        1024,
    )
    with pytest.raises(SystemExit):
        _parse("predict", "x", "--ray-actors", "0")


def test_train_flags_set_the_keys_their_fields_name(tmp_path):
    args = _parse("train", "--data", "d", "-o", "out", "--faces", "--resume", "--path-column", "file")
    flags = file_flag_values(TrainConfig, args)
    assert flags == {
        "output_dir": "out",
        "data.data": "d",
        "data.path_column": "file",
        "faces.enabled": True,
        "resume_from_checkpoint": True,
    }
    assert file_flag_values(TrainConfig, _parse("train")) == {}  # a flag left out leaves the file's value
    config = load_train_config(None, ["model.base=b", "output_dir=later"], flags=flags)
    assert (config.output_dir, config.data.data, config.faces.enabled) == ("later", "d", True)


def test_a_json_file_loads_like_yaml_and_unknown_keys_are_refused(tmp_path):
    settings = {"model": {"base": "b"}, "faces": True, "training": {"eval_strategy": "no"}}
    (tmp_path / "train.json").write_text(json.dumps(settings))
    (tmp_path / "train.yaml").write_text("model: {base: b}\nfaces: true\ntraining: {eval_strategy: no}\n")
    assert load_train_config(tmp_path / "train.json") == load_train_config(tmp_path / "train.yaml")
    assert load_train_config(tmp_path / "train.yaml").training == {"eval_strategy": "no"}  # YAML 1.2

    (tmp_path / "head.yaml").write_text("views: [clean]\ntarget_fpr: 1e-2\nmanifest: m.csv\n")
    with pytest.raises(ConfigError, match="unknown config key 'manifest'; known keys: manifests"):
        load_config(HeadTrainingConfig, tmp_path / "head.yaml", error=ConfigError)
    (tmp_path / "head.yaml").write_text("views: [clean]\ntarget_fpr: 1e-2\n")
    args = _parse("train-head", "-c", str(tmp_path / "head.yaml"), "--manifests", "a.csv", "b.csv")
    config = load_config(HeadTrainingConfig, args.config, flags=file_flag_values(HeadTrainingConfig, args))
    assert (config.manifests, config.views, config.target_fpr) == (["a.csv", "b.csv"], ["clean"], 0.01)


def test_flag_kinds_come_from_the_annotation():
    import argparse

    @dataclass(frozen=True)
    class Example:
        count: int | None = field(default=None, metadata={"help": "how many"})
        names: list[str] = field(default_factory=list, metadata={"help": "which"})
        strict: bool = field(default=False, metadata={"help": "refuse more"})
        checks: bool = field(default=True, metadata={"help": "the checks"})
        rate: float = field(default=0.5, metadata={"help": "how fast, in %"})

    parser = argparse.ArgumentParser()
    add_flags(parser, Example)
    assert "how fast, in %; default: 0.5" in parser.format_help()
    args = parser.parse_args(["--count", "3", "--names", "a", "b", "--strict", "--no-checks", "--rate", "2"])
    assert build_from_flags(Example, args) == Example(3, ["a", "b"], True, False, 2.0)
    assert build_from_flags(Example, parser.parse_args([])) == Example()
