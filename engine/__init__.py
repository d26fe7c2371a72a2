"""xptrain: one hand-written MLP trainer for NumPy (CPU) and CuPy (CUDA GPU)."""

__version__ = "0.1.0"

from .backend import Backend, BackendError, get_array_module, select_backend  # noqa: E402
from .data import Dataset, DataError, load_idx_folder, load_mnist, read_idx  # noqa: E402
from .model import Sequential, build_mlp  # noqa: E402
from .train import TrainConfig, Trainer, TrainingDiverged, TrainingInterrupted  # noqa: E402

__all__ = ["Backend", "BackendError", "Dataset", "DataError", "Sequential", "TrainConfig",
           "Trainer", "TrainingDiverged", "TrainingInterrupted", "build_mlp",
           "get_array_module", "load_idx_folder", "load_mnist", "read_idx", "select_backend"]
