"""Two cheap corrections of a trained student, probed on val (docs/results.md); neither helped.

    python scripts/val_probes.py runs/medium_train_fixres_soup.safetensors batchnorm
    python scripts/val_probes.py runs/medium_train_fixres_soup.safetensors bias

``batchnorm``: re-estimate every BatchNorm's statistics on whole train frames (no augmentation), as one does
after averaging weights, and score val with and without. ``bias``: a per-class offset added to the logits
(foldable into the classifier's bias, so free at inference), chosen by coordinate ascent on the mIoU of one
half of val (first 50 / last 51 frames, at every other pixel), scored on the other half, both ways.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from road_seg_ros.core.checkpoint import load_checkpoint  # noqa: E402
from road_seg_ros.core.labels import NUM_CLASSES  # noqa: E402
from road_seg_ros.core.preprocess import Normalize  # noqa: E402
from road_seg_ros.training.data import CamVid  # noqa: E402
from road_seg_ros.training.metrics import ConfusionMatrix  # noqa: E402

STEPS = (-0.5, -0.25, -0.1, 0.1, 0.25, 0.5)


def batches(data, split, size=8):
    return DataLoader(CamVid(data, split), batch_size=size)


@torch.no_grad()
def val_logits(model, normalize, data):
    pairs = [(model(normalize(images))["out"].half(), labels) for images, labels in batches(data, "val")]
    return torch.cat([logits for logits, _ in pairs]), torch.cat([labels for _, labels in pairs])


def miou(logits, labels, bias=None) -> float:
    scores = logits.float() if bias is None else logits.float() + bias.view(1, -1, 1, 1)
    confusion = ConfusionMatrix()
    confusion.update(scores.argmax(1), labels)
    return 100 * confusion.miou()


@torch.no_grad()
def probe_batchnorm(model, normalize, data) -> dict:
    recalibrated = copy.deepcopy(model)
    for module in recalibrated.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain mean over every batch
    recalibrated.train()
    for images, _ in batches(data, "train"):
        recalibrated(normalize(images))
    return {"val": miou(*val_logits(model, normalize, data)),
            "val_recalibrated": miou(*val_logits(recalibrated.eval(), normalize, data))}  # fmt: skip


def fit_bias(logits, labels, rounds=3):
    bias, best = torch.zeros(NUM_CLASSES), miou(logits, labels)
    for _ in range(rounds):
        for label in range(NUM_CLASSES):
            for step in STEPS:
                trial = bias.clone()
                trial[label] += step
                score = miou(logits, labels, trial)
                if score > best + 1e-6:
                    bias, best = trial, score
    return bias


def probe_bias(model, normalize, data) -> dict:
    logits, labels = val_logits(model, normalize, data)
    logits, labels = logits[:, :, ::2, ::2], labels[:, ::2, ::2]
    halves = {"first": slice(0, 50), "last": slice(50, None)}
    report = {}
    for fit_on, score_on in (("first", "last"), ("last", "first")):
        bias = fit_bias(logits[halves[fit_on]], labels[halves[fit_on]])
        held = logits[halves[score_on]], labels[halves[score_on]]
        report[f"fit_{fit_on}_score_{score_on}"] = {
            "bias": [round(value, 2) for value in bias.tolist()],
            "held_out_before": miou(*held),
            "held_out_after": miou(*held, bias),
        }
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("probe", choices=("batchnorm", "bias"))
    parser.add_argument("--data", help="CamVid root (default: $CAMVID_ROOT or ../shared/camvid)")
    args = parser.parse_args()
    model, info = load_checkpoint(args.checkpoint)
    normalize = Normalize(info.mean, info.std)
    probe = probe_batchnorm if args.probe == "batchnorm" else probe_bias
    print(json.dumps(probe(model.eval(), normalize, args.data), indent=1))


if __name__ == "__main__":
    main()
