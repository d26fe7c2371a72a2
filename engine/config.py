"""Hyperparameters of a training run, validated with errors that name the value."""

from dataclasses import dataclass, field, fields

import kernels

ZERO_COLUMNS = ("auto", "skip", "read")  # see TrainConfig.skips_zero_columns


@dataclass
class TrainConfig:
    """Hyperparameters of a run; the defaults are the tuned MNIST recipe."""
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 5
    gamma: float = 0.1
    model: str = "mlp"
    hidden: tuple = (512,)
    activation: str = "relu"
    dropout: float = 0.0
    seed: int = 0
    val_fraction: float = 0.0
    kernels: str = "fused"
    zero_columns: str = "auto"
    eval_batch: int = 5000
    extra: dict = field(default_factory=dict)

    def validate(self):
        for name in ("epochs", "batch_size", "eval_batch", "step_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.val_fraction and not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be between 0 and epochs ({self.epochs}), "
                             f"got {self.warmup_epochs!r}")
        if self.zero_columns not in ZERO_COLUMNS:
            raise ValueError(f"zero_columns must be one of {', '.join(ZERO_COLUMNS)}, "
                             f"got {self.zero_columns!r}")
        kernels.set_mode(self.kernels)
        return self

    def skips_zero_columns(self, device):
        """Whether training on ``device`` skips the input columns that are zero in a whole
        batch (:class:`engine.layers.Linear`). "auto": on the CPU (measured: a faster step);
        not on a GPU, where it is not measured yet and each window would be copied for
        cuBLAS."""
        return self.zero_columns == "skip" or (self.zero_columns == "auto" and device == "cpu")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in d.items() if k in known})
        config.hidden = tuple(config.hidden)
        return config
