"""Hyperparameters of a training run, validated with errors that name the value."""

from dataclasses import dataclass, field, fields

from .errors import ConfigError
from .kernels import MODES, TWINS

ZERO_COLUMNS = ("auto", "skip", "read")  # see TrainConfig.skips_zero_columns
# Augmentation strengths and their valid ranges [low, high) (see xptrain.augment).
AUGMENT_RANGES = (("translate", 0, 14), ("rotate", 0, 90), ("scale", 0, 1), ("shear", 0, 60),
                  ("elastic", 0, 10))
# Fields a resumed run may change: they choose how the same steps are computed, not which.
EXECUTION_FIELDS = ("kernels", "zero_columns", "eval_batch")


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
    augment: bool = False
    translate: float = 2.0
    rotate: float = 12.0
    scale: float = 0.1
    shear: float = 8.0
    elastic: float = 0.0
    label_smoothing: float = 0.0
    recipe: str = "default"
    extra: dict = field(default_factory=dict)

    def validate(self):
        """Check every field; return ``self``. A :class:`ConfigError` names the bad one."""
        for name in ("epochs", "batch_size", "eval_batch", "step_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.val_fraction and not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"warmup_epochs must be between 0 and epochs ({self.epochs}), "
                              f"got {self.warmup_epochs!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name, low, high in AUGMENT_RANGES + (("label_smoothing", 0, 1),):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and low <= value < high):
                raise ConfigError(f"{name} must be in [{low}, {high}), got {value!r}")
        from .recipes import RECIPES

        for name, choices in (("zero_columns", ZERO_COLUMNS), ("recipe", tuple(RECIPES)),
                              ("kernels", MODES + tuple(TWINS))):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, name)!r}")
        return self

    def skips_zero_columns(self, device):
        """Whether a first Linear layer on ``device`` skips the input columns that are zero
        in a whole batch (:class:`xptrain.layers.ColumnWindow`). "auto": on the CPU
        (measured: a faster step); not on a GPU, where finding the window is a device read
        per step."""
        return self.zero_columns == "skip" or (self.zero_columns == "auto" and device == "cpu")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in d.items() if k in known})
        config.hidden = tuple(config.hidden)
        return config
