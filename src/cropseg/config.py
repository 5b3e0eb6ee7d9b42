"""Where the Hydra configs live, and turning composed configs into objects.

The configs are in the repository's ``conf/`` (an editable install) or packaged as
``cropseg/conf`` (a wheel). Building objects here, not with ``hydra.utils.instantiate``,
lets every bad value be reported by its config key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from cropseg.errors import UserError


def config_dir() -> Path:
    packaged = Path(__file__).parent / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


CONFIG_DIR = config_dir()


def _sqlite_url(path: str) -> str:
    """``sqlite:///ABS`` for an Optuna study file, creating its folder (SQLite does not)."""
    p = Path(path).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


def run_dirname(num: Any, overrides: Any, max_len: int = 60, fixed: Any = None) -> str:
    """A sweep job's folder name, ``<n>_<short readable>`` (``3_model-unet_loss-bce_dice``).

    Only letters, digits and ``. _ + -`` appear, so that a checkpoint path copied from a sweep
    can be given back as an override (``ckpt=...``) without Hydra quoting (``=`` and ``,`` would
    need it). The name shows what differs between the jobs: overrides given as such on the
    command line (``fixed``, default ``sys.argv``: the same for every job) are left out, and so
    are paths and where-to-write keys; keys are shortened to their last part
    (``optimizer.lr=0.001`` -> ``lr-0.001``); a long name is cut and hashed. The job number keeps
    names unique; the full overrides stay in ``.hydra/``.
    """
    import hashlib
    import re
    import sys

    same = set(sys.argv[1:] if fixed is None else fixed)
    # A key given one plain value on the command line is the same in every job, whatever form
    # Hydra writes the value back in (optimizer.lr=1e-3 comes back as 0.001).
    single = {k for k, _, v in (str(o).lstrip("+~").partition("=") for o in same if "=" in str(o))
              if "," not in v and not re.match(r"\s*\w+\(", v)}
    keep = []
    for o in list(overrides or []):
        key, _, value = str(o).lstrip("+~").partition("=")
        if str(o) in same or key in single or key.startswith(("paths.", "hydra.")) or key in {"seed", "ckpt_path", "init_from"} \
                or "/" in value:
            continue
        keep.append(f"{key.rsplit('.', 1)[-1]}-{value}")
    name = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9._+-]", "-", "_".join(keep))).strip("-_")
    if len(name) > max_len:
        name = name[: max_len - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{num}_{name}" if name else str(num)


class ConsoleFormatter(logging.Formatter):
    """Run logs on the console as people read them: INFO lines as they are, others prefixed
    (``warning: ...``). The run folder's log file keeps time, logger and level (conf/hydra/default.yaml)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


#: Trainer arguments that cropseg's own config groups provide (callbacks, logger).
_TRAINER_FROM_GROUPS = ("self", "logger", "callbacks")


def trainer_defaults() -> dict[str, Any]:
    """Every ``pytorch_lightning.Trainer`` argument with Lightning's own default.

    Registered as the base of ``conf/trainer/default.yaml`` so that any Trainer argument can be
    overridden on the command line (``trainer.limit_train_batches=2``) without Hydra's ``+``,
    and follows the installed Lightning version.
    """
    import inspect

    import pytorch_lightning as pl

    out = {}
    for name, p in inspect.signature(pl.Trainer.__init__).parameters.items():
        if name in _TRAINER_FROM_GROUPS or p.kind is not p.KEYWORD_ONLY:
            continue
        default = p.default
        if default is p.empty or not (default is None or isinstance(default, (bool, int, float, str))):
            default = None
        out[name] = default
    return out


def register_configs() -> None:
    """Configs made in code (Hydra ConfigStore): the Trainer's arguments (``/lightning_trainer``)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    if "lightning_trainer.yaml" not in cs.repo:
        cs.store(name="lightning_trainer", node=trainer_defaults())


if not OmegaConf.has_resolver("cropseg_sqlite"):
    OmegaConf.register_new_resolver("cropseg_sqlite", _sqlite_url)
if not OmegaConf.has_resolver("cropseg_dirname"):
    OmegaConf.register_new_resolver("cropseg_dirname", run_dirname)


def compose(config_name: str = "train", overrides: list[str] | None = None,
            return_hydra_config: bool = False) -> DictConfig:
    """Compose a config as the entry point would (for tests and notebooks); no run folder.

    Without the ``hydra`` node, ``paths.output_dir`` must be given as an override.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if config_name == "train":
        register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []),
                             return_hydra_config=return_hydra_config)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolve a config into plain data; a missing mandatory value names its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", None) or str(err)
        raise UserError(f"{key} is required (e.g. {key}=...)") from None
    except OmegaConfBaseException as err:
        raise UserError(f"config: {str(err).splitlines()[0]}") from None


def datamodule_from_config(data: dict[str, Any], seed: int = 0):
    from cropseg.bands import normalization_from_config
    from cropseg.data.datamodule import CroplandDataModule
    from cropseg.data.transforms import AugmentConfig

    if data.get("generate_demo"):
        from cropseg.data.demo import DemoSpec, ensure_demo

        spec = DemoSpec(**data["generate_demo"])
        ensure_demo(Path(data["root"]).parent, spec)
    bands = list(data["bands"])
    norm = normalization_from_config(data.get("normalization"), bands)
    return CroplandDataModule(
        root=data.get("root"), store=data.get("store"), train_list=data.get("train_list"), val_list=data.get("val_list"),
        test_list=data.get("test_list"), bands=bands,
        normalization=norm, patch_size=data.get("patch_size", 192), crop_size=data.get("crop_size"),
        batch_size=data.get("batch_size", 8), num_workers=data.get("num_workers", 0),
        oversample=data.get("oversample", 0.5), epoch_length=data.get("epoch_length"),
        augment=AugmentConfig.from_config(data.get("augment")), augment_on_device=data.get("augment_on_device", "auto"),
        skip_missing=data.get("skip_missing", False), val_fraction=data.get("val_fraction", 0.2),
        index_cache=data.get("index_cache"), seed=seed, pin_memory=data.get("pin_memory", "auto"),
    )


def model_from_config(cfg: dict[str, Any], spec) -> Any:
    """The LightningModule ``cfg`` describes, fed by the data module's input ``spec`` (InputSpec)."""
    from cropseg.models.module import SegmentationModule

    model, data = cfg["model"], cfg["data"]
    loss = cfg.get("loss", {}).get("terms", "bce+dice")
    return SegmentationModule(
        arch=model["arch"], encoder=model["encoder"], encoder_weights=model.get("encoder_weights"),
        input_spec=spec.to_dict(), patch_size=data.get("patch_size", 192),
        loss=loss, optimizer=cfg.get("optimizer"), scheduler=cfg.get("scheduler"),
        threshold=model.get("threshold", 0.5), arch_kwargs=model.get("arch_kwargs"),
        channels_last=model.get("channels_last", False), train_config=cfg,
    )
