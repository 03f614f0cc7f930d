"""The offline pipeline: CamVid data, training and distillation, losses, metrics, evaluation, export."""
