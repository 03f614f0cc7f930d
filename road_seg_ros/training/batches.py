"""Training batches: augmented on the CPU by DataLoader workers, or held and augmented on the device (GPU)."""

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .augment import Augmentation, DeviceAugmentation, TrainAugmentation
from .config import TrainConfig
from .data import CamVid


def _seed_worker(_worker_id):
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.rng = np.random.default_rng(torch.initial_seed() % 2**32)


class LoaderBatches:
    """Augmented batches from DataLoader workers (CPU augmentation), moved to the device."""

    def __init__(self, dataset: CamVid, config: TrainConfig, env):
        dataset.transform = TrainAugmentation(Augmentation.from_config(config), seed=config.seed + env.rank)
        self.device = env.device
        self.sampler = DistributedSampler(dataset, seed=config.seed) if env.world_size > 1 else None
        self.loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=self.sampler is None,
            sampler=self.sampler,
            num_workers=config.workers,
            worker_init_fn=_seed_worker,
            persistent_workers=config.workers > 0,
            pin_memory=self.device.type == "cuda",
            drop_last=len(dataset) >= config.batch_size,
        )

    def __len__(self):
        return max(1, len(self.loader))

    def epoch(self, epoch: int):
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        for batch in self.loader:  # images, labels and, with cached teacher logits, those
            yield tuple(tensor.to(self.device, non_blocking=True) for tensor in batch)


class DeviceBatches:
    """The whole training set held on the device as uint8, augmented there a batch at a time (GPU training)."""

    def __init__(self, dataset: CamVid, config: TrainConfig, env):
        self.device = env.device
        self.images = torch.stack([torch.from_numpy(image.transpose(2, 0, 1).copy()) for image in dataset.images])
        self.images = self.images.to(self.device)
        self.labels = torch.stack([torch.from_numpy(label) for label in dataset.labels]).to(self.device)
        self.soft = None
        if dataset.soft_targets is not None:
            soft = [torch.from_numpy(logits.transpose(2, 0, 1).copy()) for logits in dataset.soft_targets]
            self.soft = torch.stack(soft).to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(config.seed + env.rank)
        self.augment = DeviceAugmentation(Augmentation.from_config(config), self.generator)
        self.batch_size = config.batch_size
        self.steps = max(1, len(dataset) // (config.batch_size * env.world_size))

    def __len__(self):
        return self.steps

    def epoch(self, epoch: int):
        order = torch.randperm(len(self.images), device=self.device, generator=self.generator)
        for step in range(self.steps):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            if len(index) < self.batch_size:  # more steps than one pass over a tiny set: draw at random
                index = torch.randint(
                    len(self.images), (self.batch_size,), device=self.device, generator=self.generator
                )
            yield self.augment(self.images[index], self.labels[index], None if self.soft is None else self.soft[index])
