"""A training run's log: one CSV row an epoch, and its loss and val mIoU curves as a PNG."""

import csv
import math
from pathlib import Path


def write_logs(history: list, out: Path) -> None:
    """``out``/log.csv and ``out``/curves.png from the epochs' rows so far."""
    columns = sorted({key for row in history for key in row}, key=_column_order)
    with (out / "log.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, out / "curves.png")


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
