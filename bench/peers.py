"""Peers doing the same job: PyTorch eager and scikit-learn's MLPClassifier.

Each runner has the engine runner's interface (``train_epoch``, ``train_steps``, ``infer``,
``accuracy``). A peer that is not installed is reported as absent, never an error.
"""

import importlib.util
import math
import time

import numpy as np


def available(name):
    return importlib.util.find_spec(name) is not None


class TorchRunner:
    """The same MLP in PyTorch eager mode: float32 data resident on the device."""

    def __init__(self, data, device="cpu", hidden=(128,), activation="sigmoid",
                 optimizer="sgd", lr=0.1, batch_size=128, momentum=0.0, seed=0, model="mlp"):
        import torch

        self.torch, self.device = torch, device
        self.name = "torch-eager"
        torch.manual_seed(seed)
        dev = torch.device(device)
        self.x = torch.from_numpy(data.x_train).to(dev).float().div_(255)
        self.y = torch.from_numpy(data.y_train).to(dev)
        self.x_test = torch.from_numpy(data.x_test).to(dev).float().div_(255)
        self.y_test = torch.from_numpy(data.y_test).to(dev)
        act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
        if model == "cnn":  # the engine's "cnn": conv32-pool-conv64-pool-fc128
            nn, h, w = torch.nn, *data.image_shape
            layers = [nn.Unflatten(1, (1, h, w)), nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128),
                      nn.ReLU(), nn.Linear(128, data.n_classes)]
        else:
            layers, width = [], data.x_train.shape[1]
            for h in hidden:
                layers += [torch.nn.Linear(width, h), act[activation]()]
                width = h
            layers.append(torch.nn.Linear(width, data.n_classes))
        self.model = torch.nn.Sequential(*layers).to(dev)
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss = torch.nn.CrossEntropyLoss()
        self.batch_size, self.n_train = batch_size, len(data.y_train)
        self.steps_per_epoch = math.ceil(self.n_train / batch_size)
        self.compile_seconds = 0.0
        self._perm = torch.randperm(self.n_train, device=dev)
        self._step = 0
        self.scheduler = None

    def sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()

    def _train_step(self, idx):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(self.x[idx]), self.y[idx])
        loss.backward()
        self.opt.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss

    def train_epoch(self):
        perm = self.torch.randperm(self.n_train, device=self.x.device)
        bs = self.batch_size
        for s in range(self.steps_per_epoch):
            self._train_step(perm[s * bs:(s + 1) * bs])
        self.sync()

    def train_steps(self, n):
        bs = self.batch_size
        for _ in range(n):
            s = self._step % self.steps_per_epoch
            self._train_step(self._perm[s * bs:(s + 1) * bs])
            self._step += 1
        self.sync()

    def infer(self):
        with self.torch.no_grad():
            for s in range(0, len(self.y_test), 5000):
                self.model(self.x_test[s:s + 5000]).argmax(dim=1)
        self.sync()

    def accuracy(self):
        with self.torch.no_grad():
            pred = self.model(self.x_test).argmax(dim=1)
        return float((pred == self.y_test).float().mean())

    def use_cosine(self, epochs):
        """PyTorch twin of the engine's default cosine schedule (per step, no warm-up)."""
        total = epochs * self.steps_per_epoch
        self.scheduler = self.torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


class SklearnRunner:
    """scikit-learn's MLPClassifier, one ``partial_fit`` per epoch (CPU only)."""

    def __init__(self, data, hidden=(128,), activation="sigmoid", lr=0.1, batch_size=128,
                 momentum=0.0, seed=0):
        from sklearn.neural_network import MLPClassifier

        self.name, self.device = "sklearn-mlp", "cpu"
        act = {"sigmoid": "logistic", "relu": "relu", "tanh": "tanh"}[activation]
        self.model = MLPClassifier(hidden_layer_sizes=tuple(hidden), activation=act,
                                   solver="sgd", alpha=0.0, batch_size=batch_size,
                                   learning_rate_init=lr, momentum=momentum,
                                   nesterovs_momentum=False, shuffle=True, random_state=seed)
        self._rng = np.random.default_rng(seed)  # rows for train_steps
        self.x = data.x_train.astype(np.float32) / np.float32(255)
        self.y = data.y_train
        self.x_test = data.x_test.astype(np.float32) / np.float32(255)
        self.y_test = data.y_test
        self.classes = np.arange(data.n_classes)
        self.n_train, self.batch_size = len(self.y), batch_size
        start = time.perf_counter()
        self.model.partial_fit(self.x[:batch_size], self.y[:batch_size], classes=self.classes)
        self.compile_seconds = 0.0
        self.setup_seconds = time.perf_counter() - start

    def train_epoch(self):
        self.model.partial_fit(self.x, self.y)

    def train_steps(self, n):
        # partial_fit is an epoch over what it is given: give it n batches' worth of rows.
        rows = self._rng.integers(0, self.n_train, n * self.batch_size)
        self.model.partial_fit(self.x[rows], self.y[rows])

    def infer(self):
        self.model.predict(self.x_test)

    def accuracy(self):
        return float((self.model.predict(self.x_test) == self.y_test).mean())
