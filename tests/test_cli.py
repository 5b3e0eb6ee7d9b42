"""The ``cropseg`` front door, run as a user runs it (a real subprocess on a real checkpoint)."""

import json
import os
import subprocess
import sys

CROPSEG = [sys.executable, "-m", "cropseg.cli"]


def test_info_describes_the_checkpoint(tiny_checkpoint):
    res = subprocess.run([*CROPSEG, "info", str(tiny_checkpoint)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    spec = info["input_spec"]
    assert spec["bands"] == ["B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem"] and "normalization" in spec
    assert info["cropseg"]["format"] == 2


def test_a_closed_pipe_ends_quietly_and_a_bad_command_in_one_line(tiny_checkpoint):
    # `cropseg info x.ckpt | head -c0`: the reader is gone before the first write.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run([*CROPSEG, "info", str(tiny_checkpoint)], stdout=write_end, stderr=subprocess.PIPE,
                             text=True, timeout=120)
    finally:
        os.close(write_end)
    assert res.returncode == 141 and res.stderr == ""
    res = subprocess.run([*CROPSEG, "info", "nope.ckpt"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "nope.ckpt" in res.stderr


def test_ctrl_c_ends_a_command_in_one_line(capsys):
    import pytest

    from cropseg.errors import report_user_errors

    @report_user_errors
    def long_job():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        long_job()
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted:") and len(err.strip().splitlines()) == 1


def _one_line(res, *needles: str) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr
    return res.stderr


import pytest  # noqa: E402


@pytest.mark.parametrize("module, override, listed", [
    ("cropseg.train", "model=segnet", "unet, unetplusplus"),
    ("cropseg.train", "loss=foo", "bce_dice"),
    ("cropseg.train", "+experiment=nope", "seed_c2"),
    ("cropseg.predict", "predict=foo", "c2_dn, original, years"),
])
def test_an_unknown_group_option_is_one_line_listing_the_choices(tmp_path, module, override, listed):
    # Hydra alone prints a dozen lines (options, search path) and exits 1.
    res = subprocess.run([sys.executable, "-m", module, override, "ckpt=x.ckpt", "input=x.tif"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    _one_line(res, override.lstrip("+").split("=")[0], listed)
    assert not list(tmp_path.iterdir()), "nothing is written before the options are checked"


@pytest.mark.parametrize("module, func", [("cropseg.train", "train"), ("cropseg.predict", "predict")])
def test_ctrl_c_in_a_hydra_command_is_one_line(tmp_path, monkeypatch, capsys, module, func):
    """`python -m cropseg.train` runs main() with the same wrapper as every other command."""
    import importlib

    mod = importlib.import_module(module)

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, func, interrupted)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        mod.main([f"paths.log_dir={tmp_path}"] + (["ckpt=x.ckpt", "input=x.tif"] if func == "predict" else []))
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted:") and len(err.strip().splitlines()) == 1
