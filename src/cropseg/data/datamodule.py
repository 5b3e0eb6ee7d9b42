"""The LightningDataModule: H5 patches → normalized, augmented, stratified batches."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.accelerators import CPUAccelerator
import torch
from torch.utils.data import DataLoader, Dataset

from cropseg.bands import DEFAULT_BANDS, Normalization
from cropseg.errors import UserError
from cropseg.models.preprocess import InputSpec, Preprocess

from .index import build_index, find_missing
from .patches import list_patches, read_list, read_patch, patch_path
from .sampler import StratifiedSampler
from .transforms import IGNORE, AugmentConfig, augment, random_crop

log = logging.getLogger(__name__)


def _bool_or_auto(value: bool | str, key: str) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    raise UserError(f"{key}={value!r}: expected true, false or auto")


class PatchDataset(Dataset):
    """Patches of one split as (image C×H×W network input, label 1×H×W with IGNORE on nodata).

    Images are finished by the model-input contract (cropseg.models.preprocess.Preprocess),
    the same module prediction and export run.
    """

    def __init__(self, root: str | Path, names: Sequence[str], bands: Sequence[str], normalization: Normalization,
                 file_bands: Sequence[Sequence[str]] | None = None, crop_size: int | None = None,
                 augment_cfg: AugmentConfig | None = None, seed: int = 0) -> None:
        self.root, self.names = Path(root), list(names)
        self.bands, self.norm = tuple(bands), normalization
        self.preprocess = Preprocess(InputSpec.build(self.bands, normalization))
        self.file_bands = [tuple(b) for b in file_bands] if file_bands is not None else None
        self.crop_size, self.augment_cfg, self.seed = crop_size, augment_cfg, seed
        self._calls = 0

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalized (C, H, W) image and (1, H, W) label of patch ``i``, nodata → 0 / IGNORE."""
        patch = read_patch(patch_path(self.root, self.names[i]), with_attrs=self.file_bands is None)
        have = self.file_bands[i] if self.file_bands is not None else patch.bands
        order = [have.index(b) for b in self.bands] if tuple(have) != self.bands else slice(None)
        # Channels first before anything else: per-pixel work over 7 interleaved values is ~5x slower.
        image = np.ascontiguousarray(patch.data.transpose(2, 0, 1)[order])
        label = patch.label[..., 0][None]  # a fresh (1, H, W) float32 array, NaN on nodata
        return self.finish(image, label, np.isfinite(label[0]))

    def finish(self, image: np.ndarray, label: np.ndarray, label_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Turn a raw float32 (C, H, W) ``image`` into network input in place (the model-input
        contract: nodata pixels become 0 after normalization); the float32 (1, H, W) ``label`` gets
        IGNORE where the image or the label has no data (also in place)."""
        nodata = self.preprocess.finish_(torch.from_numpy(image)[None])[0, 0].numpy()
        if nodata.any() or not label_valid.all():
            label[0, nodata | ~label_valid] = IGNORE
        return image, label

    def generator(self, i: int) -> torch.Generator:
        """The random draws (crop, augmentation) of this read of patch ``i``.

        The training sampler's indices carry their own key (cropseg.data.sampler.Draw): the draws
        then depend on (seed, epoch, rank, position) only — not on the worker, not on a resume.
        A plain index (someone iterating the dataset) gets fresh draws from a per-worker counter.
        """
        key = getattr(i, "key", None)
        if key is None:
            key = hash((torch.initial_seed(), int(i), self._calls))
            self._calls += 1
        return torch.Generator().manual_seed(hash((self.seed, key)) & 0x7FFFFFFF)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label = self.load(i)
        x, y = torch.from_numpy(image), torch.from_numpy(label)
        if self.crop_size or self.augment_cfg:
            g = self.generator(i)
            if self.crop_size:
                x, y = random_crop(x, y, self.crop_size, g)
            if self.augment_cfg:
                xb, yb = augment(x[None], y[None], self.augment_cfg, g)
                x, y = xb[0], yb[0]
        return self.item(i, {"image": x.contiguous(), "mask": y.contiguous()})

    def item(self, i: int, arrays: dict[str, Any]) -> dict[str, Any]:
        """``arrays`` with the patch name and, for a training draw, its key (seeds the batch's augmentation
        on the device)."""
        arrays["name"] = self.names[i]
        if getattr(i, "key", None) is not None:
            arrays["key"] = i.key
        return arrays


class CroplandDataModule(pl.LightningDataModule):
    """Streams H5 patches (``root``) or a packed store (``store``, see cropseg.data.store) with
    class-stratified oversampling of the training split."""

    def __init__(
        self,
        root: str | None = None,
        train_list: str | None = None,
        val_list: str | None = None,
        bands: Sequence[str] = DEFAULT_BANDS,
        normalization: Normalization | None = None,
        patch_size: int = 192,
        crop_size: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        oversample: float = 0.5,
        epoch_length: int | None = None,
        augment: AugmentConfig | None = None,
        augment_on_device: bool | str = False,
        skip_missing: bool = False,
        val_fraction: float = 0.2,
        index_cache: str | None = None,
        seed: int = 0,
        pin_memory: bool | str = False,
        persistent_workers: bool = True,
        store: str | None = None,
        test_list: str | None = None,
    ) -> None:
        super().__init__()
        if root is None and store is None:
            raise UserError("data.root (H5 patches) or data.store (packed store) is required")
        self.store_path = Path(store) if store is not None else None
        self.store = None  # the opened PackedStore, in setup
        self.root = Path(root) if root is not None and store is None else self.store_path
        self.train_list, self.val_list, self.test_list = train_list, val_list, test_list
        self.bands = tuple(bands)
        self.norm = normalization or Normalization.default(self.bands)
        self.spec = InputSpec.build(self.bands, self.norm)  # what the model stores and prediction repeats
        self.patch_size, self.crop_size = int(patch_size), crop_size
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.oversample, self.epoch_length = float(oversample), epoch_length
        # "auto" (the configs' default): on the device / pinned when the trainer runs on a GPU, where
        # batched transforms are nearly free and workers should only read; resolved in setup.
        self._settings = {"augment_on_device": _bool_or_auto(augment_on_device, "data.augment_on_device"),
                          "pin_memory": _bool_or_auto(pin_memory, "data.pin_memory")}
        self.augment_cfg = augment
        self.augment_on_device = self._settings["augment_on_device"] is True
        self.skip_missing, self.val_fraction = skip_missing, val_fraction
        self.index_cache, self.seed = index_cache, int(seed)
        self.pin_memory = self._settings["pin_memory"] is True
        self.persistent_workers = persistent_workers
        self.index: dict[str, Any] = {}
        self._gen = torch.Generator().manual_seed(self.seed)

    # -- checking the data once, with clear errors ----------------------------------------
    def _names(self, list_file: str | None, key: str) -> list[str]:
        if list_file is None:
            return []
        names = read_list(list_file)
        if self.store is not None:
            missing = [n for n in names if n not in self.store.rows]
        else:
            missing = find_missing(self.root, names)
        if missing:
            head = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            if not self.skip_missing:
                where = f"the packed store {self.root}" if self.store is not None else self.root
                raise UserError(f"data.{key}={list_file}: {len(missing)} listed patch(es) not found in {where}: "
                                f"{head} (data.skip_missing=true skips them)")
            log.warning("data.%s: skipping %d missing patch(es): %s", key, len(missing), head)
            gone = set(missing)
            names = [n for n in names if n not in gone]
        return names

    def _check(self, df, key: str) -> None:
        def first(mask) -> str:
            bad = df.name[mask].tolist()
            return ", ".join(f"{n}.h5" for n in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")

        size = (df.height != self.patch_size) | (df.width != self.patch_size)
        if size.any():
            i = int(np.argmax(size.values))
            raise UserError(f"{self.root}: patch size {df.height[i]}x{df.width[i]} differs from data.patch_size="
                            f"{self.patch_size} in {first(size)}")
        for i, names in enumerate(df.bands):
            have = tuple(names.split(","))
            if not set(self.bands) <= set(have):
                raise UserError(f"{self.root}/{df.name[i]}.h5: has {len(have)} bands {list(have)}, data.bands asks for "
                                f"{list(self.bands)}")
        labels = (df.label_min < 0) | (df.label_max > 1)
        if labels.any():
            raise UserError(f"{self.root}: labels outside [0, 1] in {first(labels)}")

    def setup(self, stage: str | None = None) -> None:
        if self.index:
            return
        on_gpu = self.trainer is not None and not isinstance(self.trainer.accelerator, CPUAccelerator)
        self.augment_on_device = on_gpu if self._settings["augment_on_device"] == "auto" else self.augment_on_device
        self.pin_memory = on_gpu if self._settings["pin_memory"] == "auto" else self.pin_memory
        if self.store_path is not None:
            from .store import PackedStore

            self.store = PackedStore(self.store_path)
            self._check_store()
        elif not self.root.is_dir():
            raise UserError(f"data.root={self.root}: folder not found")
        train = self._names(self.train_list, "train_list")
        val = self._names(self.val_list, "val_list")
        test = self._names(self.test_list, "test_list")
        if self.train_list is None:
            every = self.store.names if self.store is not None else list_patches(self.root)
            in_val = set(val) | set(test)
            everything = [n for n in every if n not in in_val]
            rng = np.random.default_rng(self.seed)
            if self.val_list is None:
                rng.shuffle(everything)
                n_val = max(1, int(round(len(everything) * self.val_fraction))) if len(everything) > 1 else 0
                val, train = sorted(everything[:n_val]), sorted(everything[n_val:])
            else:
                train = everything
        if not train:
            raise UserError(f"data.train_list={self.train_list or '(all patches)'}: the training set is empty "
                            f"(root {self.root})")
        shared = sorted(set(test) & (set(train) | set(val)))
        if shared:
            raise UserError(f"data.test_list={self.test_list}: {len(shared)} patch(es) also in the training or validation "
                            f"list ({', '.join(shared[:3])}); a test score needs patches never trained on or used to "
                            "choose the checkpoint")
        if self.store is not None:  # the index travels inside the store
            df = self.store.index.set_index("name", drop=False).loc[train + val + test].drop(columns="row")
            df = df.reset_index(drop=True)
        else:
            df = build_index(self.root, train + val + test, cache=self.index_cache, workers=min(4, os.cpu_count() or 1),
                             progress=len(train) + len(val) + len(test) > 500)
        self._check(df, "train")
        n_tv = len(train) + len(val)
        self.index = {"train": df.iloc[: len(train)].reset_index(drop=True),
                      "val": df.iloc[len(train):n_tv].reset_index(drop=True),
                      "test": df.iloc[n_tv:].reset_index(drop=True)}
        on_worker = None if self.augment_on_device else self.augment_cfg
        if self.store is not None:
            from .store import StoreDataset

            # Augmenting on the device, training workers only read: stored float16/uint8 values travel
            # (half the bytes) and normalization happens batched in on_after_batch_transfer.
            self.train_set = StoreDataset(self.store, train, self.bands, self.norm, self.crop_size, on_worker, self.seed,
                                          raw=self.augment_on_device)
            self.val_set = StoreDataset(self.store, val, self.bands, self.norm)
            self.test_set = StoreDataset(self.store, test, self.bands, self.norm)
            return
        self.train_set = PatchDataset(self.root, train, self.bands, self.norm,
                                      [b.split(",") for b in self.index["train"].bands], self.crop_size, on_worker, self.seed)
        self.val_set = PatchDataset(self.root, val, self.bands, self.norm,
                                    [b.split(",") for b in self.index["val"].bands])
        self.test_set = PatchDataset(self.root, test, self.bands, self.norm,
                                     [b.split(",") for b in self.index["test"].bands])

    def _check_store(self) -> None:
        """A store built for other bands or another patch size than the config: one clear line."""
        s = self.store
        missing = [b for b in self.bands if b not in s.bands]
        if missing:
            raise UserError(f"data.store={s.path}: built with bands {list(s.bands)}, data.bands asks for "
                            f"{list(self.bands)} ({missing} not in the store); pack it again with those bands")
        if (s.height, s.width) != (self.patch_size, self.patch_size):
            raise UserError(f"data.store={s.path}: patch size {s.height}x{s.width} differs from data.patch_size="
                            f"{self.patch_size}")

    # -- loaders --------------------------------------------------------------------------
    def _loader(self, dataset, **kw) -> DataLoader:
        workers = self.num_workers
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=workers, pin_memory=self.pin_memory,
                          persistent_workers=self.persistent_workers and workers > 0, **kw)

    def train_dataloader(self) -> DataLoader:
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        sampler = StratifiedSampler(self.index["train"].c.to_numpy(), self.oversample, self.epoch_length,
                                    seed=self.seed, num_replicas=world, rank=rank)
        return self._loader(self.train_set, sampler=sampler, drop_last=len(sampler) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        if len(self.val_set) == 0:
            return []  # type: ignore[return-value]
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The held-out test list (``data.test_list``), tested once after fit on the best checkpoint."""
        if len(getattr(self, "test_set", [])) == 0:
            return []  # type: ignore[return-value]
        return self._loader(self.test_set, shuffle=False)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        keys = batch.pop("key", None)
        if keys is not None:  # one seed per batch from its draws' keys, on the CPU: no sync later
            batch["augment_seed"] = hash((self.seed, *keys.tolist())) & 0x7FFF_FFFF
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return self.device_transforms(batch, training=self.trainer is not None and self.trainer.training)

    def device_transforms(self, batch: dict, training: bool) -> dict:
        """What ``data.augment_on_device`` runs on a batch once it is on the device, cheap on a GPU:
        finishing raw store batches (normalization, nodata mask), then batched augmentation."""
        if "image16" in batch:
            batch = self.train_set.finish_batch(batch)
        seed = batch.pop("augment_seed", None)
        if training and self.augment_on_device and self.augment_cfg:
            # Seeded by the batch's draws (seed, epoch, rank, positions): a resumed run augments alike.
            g = torch.Generator().manual_seed(seed) if seed is not None else self._gen
            batch["image"], batch["mask"] = augment(batch["image"], batch["mask"], self.augment_cfg, g)
        return batch
