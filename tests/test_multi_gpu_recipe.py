"""The multi-GPU recipe of docs/training.md: its launch commands and accelerate configs parse as written.

They need GPUs to run (tests/test_training.py runs DDP on 2 CPU processes); here every line goes through
the launcher's own argument parser and then through `train`'s, so a renamed flag can't slip in.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from deepfake_detector.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _recipe_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "training.md").read_text()
    section = text.split("## Several processes, GPUs or nodes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n(.*?)```", section, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


def test_launch_commands_parse_down_to_train():
    pytest.importorskip("accelerate")
    from accelerate.commands.launch import launch_command_parser
    from torch.distributed.run import get_args_parser

    commands = _recipe_commands()
    assert {argv[0] for argv in commands} == {"accelerate", "torchrun"} and len(commands) >= 5
    configs = set()
    for argv in commands:
        if argv[0] == "accelerate":
            launch = launch_command_parser().parse_args(argv[2:])
            configs.add(launch.config_file)
        else:
            launch = get_args_parser().parse_args(argv[1:])
        assert launch.module and launch.training_script == "deepfake_detector", argv
        train = build_parser().parse_args(launch.training_script_args)
        assert train.command == "train" and train.config and train.data and train.output_dir
    assert {"configs/accelerate/ddp.yaml", "configs/accelerate/fsdp.yaml"} <= configs


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP")])
def test_accelerate_configs_load(name, kind):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == kind and config.mixed_precision == "no"
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
