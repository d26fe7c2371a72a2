"""xptrain: a from-scratch MLP and CNN trainer for NumPy (CPU) and CuPy (CUDA GPU)."""

__version__ = "0.2.0"

from . import kernels  # noqa: E402
from .backend import Backend, BackendError, get_array_module, select_backend  # noqa: E402
from .builders import build_mlp, from_spec  # noqa: E402
from .data import DataError, Dataset, load_idx_folder, load_mnist, read_idx  # noqa: E402
from .errors import ConfigError, UserError  # noqa: E402
from .model import Sequential  # noqa: E402
from .train import TrainConfig, Trainer, TrainingDiverged, TrainingInterrupted  # noqa: E402

__all__ = ["Backend", "BackendError", "ConfigError", "Dataset", "DataError", "Sequential",
           "TrainConfig", "Trainer", "TrainingDiverged", "TrainingInterrupted", "UserError",
           "build_mlp", "from_spec", "get_array_module", "kernels", "load_idx_folder",
           "load_mnist", "read_idx", "select_backend"]
