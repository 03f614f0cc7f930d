"""``road-seg-train``: train the teacher, or distill the student from it, on CamVid.

    road-seg-train teacher --config config/train_teacher.yaml --out runs/teacher
    road-seg-train student --config config/train_student.yaml --teacher runs/teacher/best.safetensors --out runs/student

One plain loop: augmentation -> forward -> supervised loss (+ distillation)
-> step; validation on val every few epochs, best-on-val kept as a
checkpoint the engine loads. Multi-GPU and multi-node through ``torchrun``.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import losses
from .camvid_classes import CLASS_NAMES, MEAN, STD
from .checkpoint import CheckpointError, ModelInfo, load_checkpoint, save_checkpoint
from .data import CamVid, DataError, DeviceAugmentation, TrainAugmentation, class_weights
from .metrics import ConfusionMatrix
from .models import build_model, resolve_architecture


@dataclass
class TrainConfig:
    arch: dict = field(default_factory=lambda: {"name": "student", "size": "small"})
    epochs: int = 200
    batch_size: int = 8  # per process
    crop_size: tuple = (360, 480)
    scale_range: tuple = (0.5, 2.0)
    jitter: float = 0.3
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 3
    loss: str = "weighted_ce"  # ce | weighted_ce | ohem
    aux_weight: float = 0.4
    # Validate and save an exponential moving average of the weights (0: off): smoother than the last step's
    # weights, which matters most for small from-scratch models at the end of a short schedule.
    ema_decay: float = 0.0
    kd_pixel_weight: float = 1.0
    kd_pixel_temperature: float = 1.0
    kd_cwd_weight: float = 3.0
    kd_cwd_temperature: float = 4.0
    teacher_flip: bool = True  # teacher target = mean of logits on the frame and its mirror
    eval_interval: int = 5
    # Wall-clock budget in minutes (0: none). The LR schedule then anneals by whichever is further along,
    # steps or time, and training stops when the budget is spent: the run ends with a fully decayed LR
    # however busy the machine is (budgeted training, Li et al., ICLR 2020).
    time_budget_minutes: float = 0.0
    seed: int = 0
    workers: int = 2  # DataLoader workers for CPU augmentation
    device_augmentation: bool = False  # hold the data on the device and augment there (GPU training)
    amp: bool = True  # bf16 autocast, CUDA only
    train_split: str = "train"
    val_split: str = "val"
    limit: int | None = None  # use only the first N training frames (tests, smoke runs)
    val_limit: int | None = None


DISTILL_CHOICES = {
    "none": (False, False),
    "pixel": (True, False),
    "cwd": (False, True),
    "both": (True, True),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("teacher", "student"), help="which network to train")
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig fields")
    parser.add_argument("--data", help="CamVid root (default: $CAMVID_ROOT or ../shared/camvid)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.csv, curves.png")
    parser.add_argument("--teacher", type=Path, help="teacher checkpoint to distill from (student only)")
    parser.add_argument(
        "--distill", choices=sorted(DISTILL_CHOICES), help="which distillation terms to use (default: both)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument(
        "--init", type=Path, help="start from this checkpoint's weights (same architecture): fine-tuning"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field (YAML value)"
    )
    return parser.parse_args(argv)


def build_config(args) -> TrainConfig:
    values = {}
    if args.config:
        if not args.config.is_file():
            raise ValueError(f"config file not found: {args.config}")
        values.update(yaml.safe_load(args.config.read_text()) or {})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        values[key] = yaml.safe_load(value)
    for flag in ("epochs", "batch_size", "lr", "seed"):
        if getattr(args, flag) is not None:
            values[flag] = getattr(args, flag)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    config = TrainConfig(**values)
    config.crop_size = tuple(config.crop_size)
    config.scale_range = tuple(config.scale_range)
    config.arch = {**config.arch, "name": args.role}
    if args.distill:
        pixel, cwd = DISTILL_CHOICES[args.distill]
        config.kd_pixel_weight *= pixel
        config.kd_cwd_weight *= cwd
    if args.role == "teacher" or not args.teacher:
        config.kd_pixel_weight = config.kd_cwd_weight = 0.0
    return config


class Distributed:
    """Rank, world size and device, from torchrun's environment (or a single process)."""

    def __init__(self, device_choice: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
        if device_choice == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda but no CUDA device is available")
        self.device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world_size > 1:
            dist.init_process_group("nccl" if use_cuda else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world_size > 1:
            dist.barrier()

    def close(self):
        if self.world_size > 1:
            dist.destroy_process_group()


class Normalize(torch.nn.Module):
    """uint8 N x 3 x H x W on the device -> normalised float, channels_last."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", 255.0 * torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(STD).view(1, 3, 1, 1)))

    def forward(self, images):
        return ((images.float() - self.mean) * self.scale).contiguous(memory_format=torch.channels_last)


class PolySchedule:
    """Linear warm-up, then poly decay (power 0.9) over steps, or over a time budget if that runs out first."""

    def __init__(self, total_steps: int, warmup_steps: int, budget_seconds: float = 0.0, power: float = 0.9):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.budget_seconds, self.power = budget_seconds, power
        self.elapsed_before = 0.0  # seconds spent in earlier runs of a resumed training
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def progress(self, step: int) -> float:
        by_steps = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        by_time = self.elapsed() / self.budget_seconds if self.budget_seconds else 0.0
        return min(1.0, max(by_steps, by_time))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return (1.0 - self.progress(step)) ** self.power


def make_optimizer(config: TrainConfig, model):
    decay, no_decay = [], []
    for parameter in model.parameters():
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)  # no decay on BN and biases
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be adamw or sgd, got {config.optimizer!r}")


def _seed_worker(worker_id):
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.rng = np.random.default_rng(torch.initial_seed() % 2**32)


class LoaderBatches:
    """Augmented batches from DataLoader workers (CPU augmentation), moved to the device."""

    def __init__(self, dataset: CamVid, config: TrainConfig, env: Distributed):
        dataset.transform = TrainAugmentation(
            config.crop_size, config.scale_range, config.jitter, seed=config.seed + env.rank
        )
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
        for images, targets in self.loader:
            yield images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)


class DeviceBatches:
    """The whole training set held on the device as uint8, augmented there a batch at a time (GPU training)."""

    def __init__(self, dataset: CamVid, config: TrainConfig, env: Distributed):
        self.device = env.device
        self.images = torch.stack([torch.from_numpy(image.transpose(2, 0, 1).copy()) for image in dataset.images])
        self.images = self.images.to(self.device)
        self.labels = torch.stack([torch.from_numpy(label) for label in dataset.labels]).to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(config.seed + env.rank)
        self.augment = DeviceAugmentation(config.crop_size, config.scale_range, config.jitter, self.generator)
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
            yield self.augment(self.images[index], self.labels[index])


class Trainer:
    def __init__(self, args, config: TrainConfig, env: Distributed):
        self.args, self.config, self.env = args, config, env
        self.device = env.device
        self.out = args.out
        torch.manual_seed(config.seed + env.rank)
        self.train_set = CamVid(args.data, config.train_split, limit=config.limit)
        self.val_set = CamVid(args.data, config.val_split, limit=config.val_limit) if env.is_main else None
        self.batches = DeviceBatches(self.train_set, config, env) if config.device_augmentation else None
        self.batches = self.batches or LoaderBatches(self.train_set, config, env)
        model = build_model(config.arch).to(self.device, memory_format=torch.channels_last)
        if env.world_size > 1 and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # small per-GPU batches
        if args.init:
            _load_initial_weights(model, args.init, config.arch)
        self.model = model
        self.ema = self._ema(model) if config.ema_decay else None
        self.ddp_model = DistributedDataParallel(model) if env.world_size > 1 else model
        self.normalize = Normalize().to(self.device)
        weight = class_weights(self.train_set.labels).to(self.device) if config.loss != "ce" else None
        self.criterion = losses.supervised_loss(config.loss, weight).to(self.device)
        self.teacher = self._load_teacher() if config.kd_pixel_weight or config.kd_cwd_weight else None
        self.optimizer = make_optimizer(config, model)
        steps_per_epoch = len(self.batches)
        self.total_steps = config.epochs * steps_per_epoch
        self.schedule = PolySchedule(
            self.total_steps, config.warmup_epochs * steps_per_epoch, 60.0 * config.time_budget_minutes
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.autocast = self.device.type == "cuda" and config.amp
        self.start_epoch, self.best_miou, self.history = 0, -1.0, []
        if args.resume:
            self._resume()

    def _ema(self, model):
        decay = self.config.ema_decay
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def evaluated_model(self):
        """The network validation scores and the best checkpoint holds: the average when one is kept."""
        return self.ema.module if self.ema is not None else self.model

    def _load_teacher(self):
        try:
            teacher, _ = load_checkpoint(self.args.teacher, self.device)
        except CheckpointError as error:
            raise ValueError(f"teacher: {error}") from None
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher.to(memory_format=torch.channels_last).eval()

    @torch.no_grad()
    def _teacher_logits(self, images):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.teacher(images)["out"].float()
            if self.config.teacher_flip:
                logits = 0.5 * (logits + self.teacher(images.flip(3))["out"].float().flip(3))
        return logits

    def train(self):
        for epoch in range(self.start_epoch, self.config.epochs):
            started = time.perf_counter()
            terms = self._train_epoch(epoch)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **terms}
            last = epoch + 1 == self.config.epochs or self._budget_spent()
            if self.env.is_main and ((epoch + 1) % self.config.eval_interval == 0 or last):
                summary = self.validate()
                row["val_miou"] = summary["miou"]
                if summary["miou"] > self.best_miou:
                    self.best_miou = summary["miou"]
                    self._save_best(epoch + 1, summary)
            row["seconds"] = time.perf_counter() - started
            if self.env.is_main:
                self.history.append(row)
                self._write_logs()
                self._save_resume_state(epoch + 1)
            self.env.barrier()
            if last:
                break
        return self.best_miou

    def _budget_spent(self) -> bool:
        spent = self.schedule.budget_seconds and self.schedule.elapsed() >= self.schedule.budget_seconds
        if self.env.world_size > 1:  # every rank must stop at the same epoch
            flag = torch.tensor([float(bool(spent))], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            spent = flag.item() > 0
        return bool(spent)

    def _train_epoch(self, epoch):
        self.ddp_model.train()
        sums = {}
        progress = tqdm(
            self.batches.epoch(epoch), total=len(self.batches), desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.env.is_main,
        )  # fmt: skip
        for images, targets in progress:
            images = self.normalize(images)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                outputs = self.ddp_model(images)
            parts = self._losses(outputs, targets, images)
            loss = sum(parts.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            progress.set_postfix(loss=f"{loss.item():.3f}")
        return {f"loss_{name}": total / len(self.batches) for name, total in sums.items()}

    def _losses(self, outputs, targets, images):
        logits = outputs["out"].float()
        parts = {"supervised": self.criterion(logits, targets)}
        if "aux" in outputs:
            parts["aux"] = self.config.aux_weight * self.criterion(outputs["aux"].float(), targets)
        if self.teacher is not None:
            teacher_logits = self._teacher_logits(images)
            if self.config.kd_pixel_weight:
                parts["kd_pixel"] = self.config.kd_pixel_weight * losses.pixel_kd_loss(
                    logits, teacher_logits, self.config.kd_pixel_temperature
                )
            if self.config.kd_cwd_weight:
                parts["kd_cwd"] = self.config.kd_cwd_weight * losses.channel_wise_distillation_loss(
                    logits, teacher_logits, self.config.kd_cwd_temperature
                )
        return parts

    @torch.no_grad()
    def validate(self) -> dict:
        model = self.evaluated_model.eval()
        confusion = ConfusionMatrix()
        for image, label in DataLoader(self.val_set, batch_size=4):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = model(self.normalize(image.to(self.device)))["out"]
            confusion.update(logits.argmax(1), label)
        return confusion.summary(CLASS_NAMES)

    def _save_best(self, epoch, summary):
        info = ModelInfo(
            arch=self.config.arch,
            input_size=[360, 480],
            description=f"{self.args.role} trained on CamVid {self.config.train_split}, "
            f"best on {self.config.val_split}",
            training={
                "role": self.args.role,
                "epoch": epoch,
                "val_miou": summary["miou"],
                "val_per_class_iou": summary["per_class_iou"],
                "teacher": str(self.args.teacher) if self.teacher is not None else None,
                "init": str(self.args.init) if self.args.init else None,
                "config": dataclasses.asdict(self.config),
                "command": " ".join(["road-seg-train", *sys.argv[1:]]),
            },
        )
        save_checkpoint(self.out / "best.safetensors", self.evaluated_model, info)

    def _save_resume_state(self, epoch):
        state = {
            "epoch": epoch,
            "best_miou": self.best_miou,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "elapsed_seconds": self.schedule.elapsed(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        tmp = self.out / "last.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "last.pt")

    def _resume(self):
        path = self.out / "last.pt"
        if not path.is_file():
            raise ValueError(f"--resume: no {path}")
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if "ema" not in state:
                raise ValueError(f"--resume: {path} was saved without ema_decay")
            self.ema.load_state_dict(state["ema"])
        self.start_epoch, self.best_miou = state["epoch"], state["best_miou"]
        # the scheduler's state carries the schedule's own fields: restart its clock for this run
        self.schedule.elapsed_before, self.schedule.started = state["elapsed_seconds"], time.monotonic()
        log = self.out / "log.csv"
        if log.is_file():
            with log.open() as handle:
                self.history = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= self.start_epoch]

    def _write_logs(self):
        columns = sorted({key for row in self.history for key in row}, key=_column_order)
        with (self.out / "log.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(self.history)
        plot_curves(self.history, self.out / "curves.png")


def _load_initial_weights(model, path: Path, arch: dict) -> None:
    try:
        initial, info = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(f"--init: {error}") from None
    if info.arch != json.loads(json.dumps(resolve_architecture(arch))):  # as saved: tuples became lists
        raise ValueError(f"--init: {path} holds a different network than this run's {arch}")
    model.load_state_dict(initial.state_dict())


def _column_order(name):
    order = ["epoch", "lr", "seconds", "val_miou"]
    return (order.index(name), name) if name in order else (len(order), name)


def plot_curves(history, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [int(row["epoch"]) for row in history]
    figure, (loss_axis, miou_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({k for row in history for k in row if k.startswith("loss_")}):
        loss_axis.plot(epochs, [float(row.get(key) or math.nan) for row in history], label=key[5:])
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.legend()
    evaluated = [
        (int(row["epoch"]), float(row["val_miou"])) for row in history if row.get("val_miou") not in (None, "")
    ]
    if evaluated:
        miou_axis.plot(*zip(*evaluated), marker="o")
    miou_axis.set_xlabel("epoch")
    miou_axis.set_ylabel("val mIoU (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    try:
        config = build_config(args)
        if args.role == "student" and args.distill not in (None, "none") and not args.teacher:
            raise ValueError("--distill needs --teacher CKPT")
        env = Distributed(args.device)
        args.out.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(args, config, env)
    except (ValueError, DataError) as error:
        sys.exit(f"road-seg-train: {error}")
    best = trainer.train()
    if env.is_main:
        print(f"best val mIoU {best:.2f}% -> {args.out / 'best.safetensors'}")
    env.close()


if __name__ == "__main__":
    main()
