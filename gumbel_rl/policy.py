"""``GumbelPolicy``: an MLP from observations to action logits that acts through a Gumbel gradient estimator.

It speaks Stable-Baselines3's ``PolicyPredictor`` protocol -- ``predict(observation, state=None,
episode_start=None, deterministic=False) -> (actions, state)``, numpy in and out, single or batched observations --
so it drops into a plain Gymnasium loop or ``stable_baselines3.common.evaluation.evaluate_policy``.

A policy file is one ``torch.save`` of plain data: a format tag, JSON metadata (spaces, architecture, estimator,
temperature, versions) and the state dict. ``GumbelPolicy.load`` rebuilds the policy from the file alone with
``torch.load(..., weights_only=True)``, so loading never runs pickled code.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from gumbel_rl.distributions import GumbelCategorical
from gumbel_rl.estimators import check_estimator, sample_action
from gumbel_rl.files import atomic_torch_save, safe_torch_load
from gumbel_rl.gumbel import _check_tau, check_logits

FORMAT = "gumbel-rl/GumbelPolicy"
FORMAT_VERSION = 1
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the named device.

    Raises:
        ValueError: an unparseable name, or ``cuda`` asked for where none is available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


def space_to_dict(space: gym.Space[Any]) -> dict[str, Any]:
    """JSON-able description of a ``Box`` or ``Discrete`` space (inverse: :func:`space_from_dict`)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    raise ValueError(f"unsupported space {space}; supported: Box, Discrete")


def space_from_dict(d: dict[str, Any]) -> gym.Space[Any]:
    """Rebuild a space written by :func:`space_to_dict`."""
    if d["type"] == "Discrete":
        return gym.spaces.Discrete(d["n"], start=d["start"])
    if d["type"] == "Box":
        return gym.spaces.Box(
            low=np.asarray(d["low"], dtype=d["dtype"]),
            high=np.asarray(d["high"], dtype=d["dtype"]),
            shape=tuple(d["shape"]),
            dtype=d["dtype"],
        )
    raise ValueError(f"unsupported space type {d['type']!r}; supported: Box, Discrete")


def features_dim(observation_space: gym.Space[Any]) -> int:
    """Length of the feature vector the network sees: ``n`` (one-hot) for Discrete, ``prod(shape)`` for Box."""
    if isinstance(observation_space, gym.spaces.Discrete):
        return int(observation_space.n)
    if isinstance(observation_space, gym.spaces.Box):
        return int(np.prod(observation_space.shape))
    raise ValueError(f"unsupported observation space {type(observation_space).__name__}; supported: Box, Discrete")


def mlp(
    in_dim: int, arch: Sequence[int], out_dim: int, activation: str = "tanh", out_gain: float = 1.0
) -> nn.Sequential:
    """An MLP ``in_dim -> arch... -> out_dim`` with orthogonal weights (gain sqrt(2) for hidden layers, ``out_gain``
    for the output layer, which is all zeros when ``out_gain == 0``) and zero biases, as SB3 initialises its nets.

    Raises:
        ValueError: unknown activation.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid activations: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    last = in_dim
    for h in arch:
        lin = nn.Linear(last, h)
        nn.init.orthogonal_(lin.weight, gain=math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin, ACTIVATIONS[activation]()]
        last = h
    head = nn.Linear(last, out_dim)
    if out_gain == 0:
        nn.init.zeros_(head.weight)
    else:
        nn.init.orthogonal_(head.weight, gain=out_gain)
    nn.init.zeros_(head.bias)
    layers.append(head)
    return nn.Sequential(*layers)


class GumbelPolicy(nn.Module):
    """MLP policy over a ``Discrete`` action space that samples actions with a Gumbel gradient estimator.

    Args:
        observation_space: ``Box`` (flattened) or ``Discrete`` (one-hot encoded) observations.
        action_space: ``Discrete(n)``.
        net_arch: hidden layer sizes.
        activation: one of :data:`ACTIVATIONS`.
        estimator: default estimator for :meth:`act` (a name from :data:`gumbel_rl.ESTIMATORS`).
        tau: default temperature > 0 (a buffer: saved and moved with the module).
        k: conditional draws for ``gumbel-rao``.
    Raises:
        ValueError: unsupported spaces, bad architecture, unknown activation or estimator, tau <= 0.
    """

    tau: torch.Tensor  # the registered buffer (0-dim), declared for type checkers

    def __init__(
        self,
        observation_space: gym.Space[Any],
        action_space: gym.Space[Any],
        net_arch: Sequence[int] = (64, 64),
        activation: str = "tanh",
        estimator: str = "st-gumbel",
        tau: float = 1.0,
        k: int = 10,
    ) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(
                f"GumbelPolicy needs a Discrete action space, got {type(action_space).__name__}; "
                "Gumbel-Softmax relaxes categorical actions only"
            )
        self.observation_space = observation_space
        self.action_space = action_space
        self.obs_dim = features_dim(observation_space)
        self.n_actions = int(action_space.n)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid activations: {', '.join(ACTIVATIONS)}")
        net_arch = [int(h) for h in net_arch]
        if any(h <= 0 for h in net_arch):
            raise ValueError(f"net_arch sizes must be positive integers, got {net_arch}")
        self.net_arch, self.activation = net_arch, activation
        self.estimator = check_estimator(estimator)
        _check_tau(tau)
        self.k = int(k)
        self.register_buffer("tau", torch.tensor(float(tau)))

        # Small last layer: a near-uniform policy at the start (as SB3's action nets, gain 0.01).
        self.net = mlp(self.obs_dim, net_arch, self.n_actions, activation, out_gain=0.01)

    # ---- tensors -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.tau.device

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (..., n_actions) for features (..., obs_dim) (see :meth:`obs_to_tensor`)."""
        if features.shape[-1] != self.obs_dim:
            raise ValueError(f"features have last dimension {features.shape[-1]}, policy expects {self.obs_dim}")
        logits: torch.Tensor = self.net(features)
        return logits

    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Return ``logits`` if they fit this policy (last dimension ``n_actions``, no NaN), else ``ValueError``."""
        if not isinstance(logits, torch.Tensor) or logits.dim() == 0 or logits.shape[-1] != self.n_actions:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"logits of shape {shape} do not fit this policy: expected (..., {self.n_actions})")
        check_logits(logits)
        return logits

    def distribution(
        self, features: torch.Tensor, tau: float | None = None, estimator: str | None = None
    ) -> GumbelCategorical:
        """The :class:`GumbelCategorical` over actions for ``features``."""
        return self.distribution_from_logits(self(features), tau=tau, estimator=estimator)

    def distribution_from_logits(
        self, logits: torch.Tensor, tau: float | None = None, estimator: str | None = None
    ) -> GumbelCategorical:
        """The :class:`GumbelCategorical` for given logits, checked against this policy's action count."""
        self.check_logits(logits)
        return GumbelCategorical(
            logits, tau=float(self.tau) if tau is None else tau, estimator=estimator or self.estimator, k=self.k
        )

    def act(
        self,
        features: torch.Tensor,
        tau: float | None = None,
        estimator: str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(action one-hot carrying the estimator's gradient, logits) for a batch of features."""
        logits = self(features)
        action = sample_action(
            logits,
            estimator or self.estimator,
            float(self.tau) if tau is None else tau,
            k=self.k,
            generator=generator,
        )
        return action, logits

    def obs_to_tensor(self, observation: Any) -> tuple[torch.Tensor, bool]:
        """Numpy observation(s) -> (features (batch, obs_dim) on the policy's device, whether it was batched).

        Raises:
            ValueError: an observation whose shape fits neither one nor a batch of this observation space, a Box
                observation with NaN or inf entries, or a Discrete observation out of range.
        """
        space = self.observation_space
        obs = np.asarray(observation)
        if isinstance(space, gym.spaces.Discrete):
            if obs.ndim > 1 or not np.issubdtype(obs.dtype, np.integer):
                raise ValueError(
                    f"expected an integer observation or a 1-D batch of them for {space}, "
                    f"got shape {obs.shape} dtype {obs.dtype}"
                )
            batched = obs.ndim == 1
            idx = obs.reshape(-1) - space.start
            if idx.size and (idx.min() < 0 or idx.max() >= space.n):
                raise ValueError(f"observation out of range for {space}: got values {obs.reshape(-1)[:8]}")
            t = torch.as_tensor(idx, dtype=torch.long, device=self.device)
            return nn.functional.one_hot(t, self.obs_dim).float(), batched
        shape = space.shape
        if obs.shape == shape:
            batched = False
        elif obs.shape[1:] == shape:
            batched = True
        else:
            raise ValueError(f"observation of shape {obs.shape} fits neither {shape} nor (batch, *{shape}) for {space}")
        if not np.issubdtype(obs.dtype, np.number) or np.issubdtype(obs.dtype, np.complexfloating):
            raise ValueError(f"observation must be real numbers for {space}, got dtype {obs.dtype}")
        finite = np.isfinite(obs)
        if not finite.all():
            where = tuple(int(i) for i in np.argwhere(~finite)[0])
            bad = obs[where]
            raise ValueError(
                f"observation contains {'NaN' if np.isnan(bad) else bad} at index {where}; "
                "the policy acts only on finite observations"
            )
        t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return t.reshape(-1, self.obs_dim), batched

    # ---- SB3's PolicyPredictor -------------------------------------------------------------------------------
    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Actions for one observation or a batch; greedy when ``deterministic``, else an exact sample.

        Returns ``(actions, state)``: an int64 array (shape ``()`` for one observation, ``(batch,)`` for a batch)
        and ``state`` unchanged (the policy is not recurrent).

        Raises:
            ValueError: an observation that does not fit the observation space, or has NaN or inf entries.
        """
        features, batched = self.obs_to_tensor(observation)
        with torch.no_grad():
            logits = self(features)
            # Greedy: argmax of the logits themselves (softmax probabilities can tie in float32 where logits differ).
            index = logits.argmax(-1) if deterministic else self.distribution_from_logits(logits).sample().argmax(-1)
        actions = index.cpu().numpy().astype(np.int64) + int(self.action_space.start)
        return (actions if batched else actions[0]), state

    # ---- files ----------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy, JSON-able."""
        return {
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
            "net_arch": list(self.net_arch),
            "activation": self.activation,
            "estimator": self.estimator,
            "tau": float(self.tau),
            "k": self.k,
        }

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write the policy to ``path`` atomically (a temporary file renamed over it). Returns the path.

        ``extra`` is JSON-able metadata stored alongside (e.g. the env id and training settings).
        """
        import gymnasium
        import stable_baselines3

        import gumbel_rl

        meta = {
            "config": self.config(),
            "extra": extra or {},
            "versions": {
                "gumbel_rl": gumbel_rl.__version__,
                "torch": torch.__version__,
                "gymnasium": gymnasium.__version__,
                "stable_baselines3": stable_baselines3.__version__,
            },
        }
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metadata": json.dumps(meta),
            "state_dict": state,
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> GumbelPolicy:
        """Rebuild a policy from a file written by :meth:`save` (``torch.load(..., weights_only=True)``).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is truncated, corrupt, not a gumbel-rl policy file, or its metadata or weights do
                not describe a valid policy (one line naming the file).
        """
        payload = safe_torch_load(path, FORMAT)
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: policy file format version {payload.get('format_version')!r} is not supported "
                f"(this gumbel-rl reads version {FORMAT_VERSION})"
            )
        cfg = _metadata(payload, path).get("config")
        try:
            if not isinstance(cfg, dict):
                raise TypeError(f"metadata 'config' must be a JSON object, got {type(cfg).__name__}")
            policy = cls(
                space_from_dict(cfg["observation_space"]),
                space_from_dict(cfg["action_space"]),
                net_arch=cfg["net_arch"],
                activation=cfg["activation"],
                estimator=cfg["estimator"],
                tau=cfg["tau"],
                k=cfg["k"],
            )
            policy.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise ValueError(f"{path}: not a valid gumbel-rl policy file ({_one_line(exc)})") from None
        return policy.to(resolve_device(device))

    @staticmethod
    def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The JSON metadata of a policy file (config, extra, versions) without building the policy.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a readable policy file, or its metadata is not a JSON object (naming the file).
        """
        return _metadata(safe_torch_load(path, FORMAT), path)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (torch's state-dict errors span several), at most 300 characters."""
    if isinstance(exc, KeyError):
        return f"missing entry {exc}"
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def _metadata(payload: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed JSON metadata of a loaded policy payload; ``ValueError`` naming ``path`` if it is not an object."""
    try:
        meta = json.loads(payload["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid gumbel-rl policy file (metadata: {_one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path}: not a valid gumbel-rl policy file (metadata is a {type(meta).__name__}, not an object)"
        )
    return meta
