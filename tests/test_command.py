"""One key=value idiom for every command: Hydra-composed options, --help from the YAML, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from cropseg.config import CONFIG_DIR

CROPSEG = [sys.executable, "-m", "cropseg.cli"]


@pytest.mark.parametrize("argv", [["prepare", "convert"], ["prepare", "pack"], ["evaluate", "points"],
                                  ["evaluate", "area"], ["runs", "summarize"], ["gee", "samples"], ["publish"],
                                  ["mosaic"], ["export"], ["info"], ["calibrate"], ["demo"]])
def test_help_lists_every_key_of_the_commands_yaml(argv, capsys):
    from cropseg.cli import main

    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    config = {"publish": "publish", "gee": "gee"}.get(argv[0], "/".join(argv))
    keys = yaml.safe_load((CONFIG_DIR / f"{config}.yaml").read_text())
    for key in keys:
        if key != "defaults":
            assert f"\n  {key}" in out, (key, out)
    assert out.startswith(f"usage: cropseg {' '.join(argv)}")


def test_values_reach_the_command_as_written(tmp_path):
    from cropseg.evaluate import EVALUATE
    from cropseg.gee.cli import load_config

    cfg = load_config(["on_complete=cp {output} x; echo $(id) 'q' ~/a", "tasks.max_in_flight=2",
                       "composite.bands=[B,G]", "dry_run_dir=a,b"])
    assert cfg["on_complete"] == "cp {output} x; echo $(id) 'q' ~/a"
    assert cfg["tasks"]["max_in_flight"] == 2 and cfg["composite"]["bands"] == ["B", "G"]
    assert cfg["dry_run_dir"] == "a,b"  # a comma in a string key is text, not a Hydra sweep
    points = EVALUATE.commands["points"].load(["pts.csv", "2015_{a}.tif", "maps/*.tif", "truth_column=class",
                                               "cropland_values=10,11", "group_by=region"])
    assert points["points"] == "pts.csv" and points["maps"] == ["2015_{a}.tif", "maps/*.tif"]
    assert points["cropland_values"] == [10, 11] and points["group_by"] == ["region"]


@pytest.mark.parametrize("args, needle", [
    (["mosaic", "maps/", "--out", "m.vrt"], "'--out' is not an option; options are key=value (e.g. out=..."),
    (["mosaic", "maps/", "colour=blue"], "'colour' is not a key of conf/mosaic.yaml; keys: maps, out, year, pattern"),
    (["mosaic", "maps/"], "out is required"),
    (["gee", "status", "tasks.foo=1"], "keys: tasks.manifest, tasks.max_in_flight"),
    (["prepare", "convert", "in=x", "out=y", "workers=many"], "workers"),
    (["info", "a.ckpt", "b.ckpt"], "too many bare arguments (b.ckpt)"),
    (["evaluate", "nope"], "unknown subcommand 'nope'; choose one of: points, agreement, area, clusters, demo"),
])
def test_option_mistakes_are_one_line_naming_the_key(args, needle, tmp_path):
    res = subprocess.run([*CROPSEG, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert needle in res.stderr, res.stderr
