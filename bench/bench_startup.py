"""Start-up of ``cropseg predict``: what every scene an Earth Engine follow loop hands over pays.

    python bench/bench_startup.py                      # this checkout
    python bench/bench_startup.py --src ../other/src   # also another checkout (e.g. an older revision), same run

For each source tree, in fresh processes (alternating trees, so that a busy machine slows
both alike), it times:

- load: interpreter start → imports → checkpoint loaded and ready to predict;
- predict: the whole ``python -m cropseg.predict`` on a 64 × 64 scene (start-up dominates);

and reports the median of ``--repeats`` runs. Each tree writes its own checkpoint with its
own code (a Unet-ResNet18 with random weights, patch 192).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETUP = """
import sys; sys.path.insert(0, {bench!r})
from pathlib import Path
from bench_predict import make_checkpoint
from cropseg.data.demo_scene import write_demo_scene
make_checkpoint(Path({ckpt!r}), encoder="resnet18")
write_demo_scene(Path({scene!r}), 64, 64, seed=1)
"""
LOAD = """
from cropseg.inference.predictor import load_checkpoint_model
load_checkpoint_model({ckpt!r}, "cpu")
import sys
print("lightning imported" if "pytorch_lightning" in sys.modules else "no lightning")
"""


def run(src: Path, code: str | None = None, args: list[str] | None = None) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "cropseg.predict", *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=src.parent)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{src}: {' '.join(cmd[:3])} failed:\n{res.stderr[-2000:]}")
    return elapsed, res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", nargs="*", default=[], help="other source trees (their src/ folder) to compare")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    trees = [HERE.parent / "src", *[Path(s).resolve() for s in a.src]]
    work = Path(tempfile.mkdtemp(prefix="cropseg-startup-"))
    files = {}
    for k, src in enumerate(trees):
        ckpt, scene = work / f"m{k}.ckpt", work / f"s{k}.tif"
        run(src, SETUP.format(bench=str(src.parent / "bench"), ckpt=str(ckpt), scene=str(scene)))
        files[src] = (ckpt, scene)
    times = {src: {"load": [], "predict": []} for src in trees}
    notes = {}
    for r in range(a.repeats):
        for src in trees:
            ckpt, scene = files[src]
            t, notes[src] = run(src, LOAD.format(ckpt=str(ckpt)))
            times[src]["load"].append(t)
            t, _ = run(src, args=[f"ckpt={ckpt}", f"input={scene}", f"output={work / f'out{r}'}", "device=cpu",
                                  f"hydra.run.dir={work / 'hydra'}", "overwrite=true"])
            times[src]["predict"].append(t)
    print(f"cropseg predict start-up, median of {a.repeats} fresh processes ({os.cpu_count()} CPUs)")
    print(f"{'source':<40} {'load (s)':>9} {'predict 64² (s)':>16}  lightning")
    for src in trees:
        load, pred = statistics.median(times[src]["load"]), statistics.median(times[src]["predict"])
        print(f"{str(src):<40} {load:>9.2f} {pred:>16.2f}  {notes[src]}")


if __name__ == "__main__":
    main()
