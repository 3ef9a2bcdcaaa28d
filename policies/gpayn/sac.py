"""Soft Actor-Critic on dictionary observations, with automatic entropy tuning (G-PAYN's learner).

Read top to bottom: the observation spec and its running normaliser, the networks (a
tanh-squashed Gaussian actor, a Q network used twice), then `SAC`, whose `update(batch)` is one
gradient step of the standard algorithm (Haarnoja et al. 2018, "SAC: algorithms and applications"):

1. critics:  y = r + gamma * (1 - done) * (min_j Q'_j(s', a') - alpha * log pi(a'|s')),  a' ~ pi(s')
             loss = sum_j MSE(Q_j(s, a), y)
2. actor:    loss = E[alpha * log pi(a~|s) - min_j Q_j(s, a~)],  a~ ~ pi(s) (reparameterised)
3. alpha:    loss = -E[log_alpha * (log pi(a~|s) + target_entropy)],  target_entropy = -action_dim
4. targets:  theta' <- (1 - tau) * theta' + tau * theta  (Polyak)

Interface, on plain dicts so the environment and replay buffer need not be imported:
- `ObservationSpec` = {key: dim} of flat float vectors, e.g. {"hand_joints": 24, "touch": 10,
  "ee_pose": 7, "grasp_center": 3, "visual": 64}; its order is the concatenation order. Images are
  not observations here: the frozen encoder (`encoder.py`) turns them into the `visual` vector once
  per env step, and that vector is what the replay buffer stores.
- A batch is {"obs": {key: (B, dim)}, "action": (B, A) in [-1, 1], "reward": (B,),
  "next_obs": {key: (B, dim)}, "done": (B,)}; `done` = 1 only for a terminal state (the value of
  what follows is 0), never for a time-limit truncation (`terminated`, as replay.py names it, is
  accepted for `done`; `truncated` is ignored). numpy arrays or torch tensors. Keys of `obs`
  outside the spec (an image, depth) are ignored.

Normalisation: each key has a `RunningNorm` (mean/std over everything it was shown). The trainer
decides what it sees (`update_normalizer`, e.g. the demonstrations, then each new transition) and
when to `freeze_normalizer`; `update` itself never changes the statistics, so a gradient step's
inputs mean what the previous step's meant. Normalised values are clipped to +-`obs_clip`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ObservationSpec = dict[str, int]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # keeps exp(log_std) away from 0 and from saturating tanh


def check_spec(spec: ObservationSpec) -> ObservationSpec:
    """Validate an observation spec ({key: dim}); returns a plain dict copy in the same order."""
    if not isinstance(spec, dict) or not spec:
        raise TypeError(f"observation spec must be a non-empty dict {{key: dim}}, got {spec!r}")
    for key, dim in spec.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"observation spec keys must be non-empty strings, got {key!r}")
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim <= 0:
            raise ValueError(f"observation spec {key!r}: dim must be a positive int, got {dim!r}")
    return {key: int(dim) for key, dim in spec.items()}


def vector_spec(
    observation_spec: dict[str, tuple[tuple[int, ...], Any]], visual_dim: int | None = None, visual_key: str = "visual"
) -> ObservationSpec:
    """The SAC spec of an env's `observation_spec()` ({key: (shape, dtype)}): every 1-D float key,
    in the env's order, then `visual_key` with `visual_dim` features if given. Images and depth
    (not 1-D) stay out: the frozen encoder turns the image into the visual features."""
    spec = {
        key: int(shape[0])
        for key, (shape, dtype) in observation_spec.items()
        if len(shape) == 1 and np.dtype(dtype).kind == "f"
    }
    if visual_dim is not None:
        if visual_key in spec:
            raise ValueError(f"the env already has a key {visual_key!r}")
        spec[visual_key] = int(visual_dim)
    return check_spec(spec)


@dataclass
class SACConfig:
    """Hyperparameters; the defaults are the usual SAC ones (Haarnoja et al., CleanRL, SB3)."""

    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4  # actor, critics and alpha
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256  # for the trainer's sampling; `update` takes whatever batch it is given
    initial_alpha: float = 1.0  # SB3's "auto" start; the tuning moves it within a few thousand steps
    target_entropy: float | None = None  # None: -action_dim
    # LayerNorm after each hidden layer of the critics (RLPD, Ball et al. 2023): keeps Q bounded on
    # actions far from the data, which otherwise run away when half of every batch is demos.
    critic_layer_norm: bool = False
    # Q-filtered behaviour cloning on demonstration rows (Nair et al. 2018, G-PAYN's OERLD baseline):
    # actor loss += bc_weight x mean over demo rows of |pi(s) - a_demo|^2 where Q(s, a_demo) > Q(s, pi(s)).
    bc_weight: float = 0.0
    bc_q_filter: bool = True  # False: clone every demo row (TD3+BC-style regularisation, no filter)
    # Gaussian noise (std, in normalised units) added to these keys' normalised values in every
    # update, e.g. {"visual": 1.0}: the actor cannot lean on features that a new object shifts
    # (frozen image features of unseen objects flipped a trained actor into its lift phase).
    feature_noise: dict[str, float] = field(default_factory=dict)
    obs_clip: float = 10.0  # normalised observations are clipped to +-obs_clip
    min_std: float = 1e-2  # std floor of the normaliser, in each key's units (constant features)

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be positive layer widths, got {self.hidden}")
        checks = {
            "lr": self.lr > 0,
            "gamma": 0.0 <= self.gamma <= 1.0,
            "tau": 0.0 < self.tau <= 1.0,
            "batch_size": self.batch_size > 0,
            "initial_alpha": self.initial_alpha > 0,
            "obs_clip": self.obs_clip > 0,
            "min_std": self.min_std > 0,
            "bc_weight": self.bc_weight >= 0,
        }
        self.feature_noise = {str(k): float(v) for k, v in dict(self.feature_noise).items()}
        checks["feature_noise"] = all(np.isfinite(v) and v >= 0 for v in self.feature_noise.values())
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"SACConfig: out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SACConfig:
        data = dict(data)
        data["hidden"] = tuple(data.get("hidden", cls.hidden))
        return cls(**data)


# --- observation normalisation --------------------------------------------------------------


class RunningNorm(nn.Module):
    """Running mean/variance of one vector key (Chan et al.'s parallel update, float64 buffers so
    millions of samples do not lose precision). `normalize` gives (x - mean) / std clipped."""

    def __init__(self, dim: int, clip: float = 10.0, min_std: float = 1e-2) -> None:
        super().__init__()
        self.dim, self.clip, self.min_std = int(dim), float(clip), float(min_std)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))  # sum of squared deviations
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add a batch (B, dim) of raw values; does nothing once frozen."""
        if bool(self.frozen):
            return
        x = x.detach().to(torch.float64).reshape(-1, self.dim)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta**2 * (self.count * n / total)
        self.count.fill_(total)

    def freeze(self) -> None:
        self.frozen.fill_(True)

    def std(self) -> torch.Tensor:
        """Per-feature std (float64), floored at `min_std`; 1 before any update."""
        if self.count < 1:
            return torch.ones_like(self.mean)
        return torch.sqrt(self.m2 / self.count).clamp_min(self.min_std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.dtype), self.std().to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)


class ObservationNormalizer(nn.Module):
    """One `RunningNorm` per spec key; `forward(obs dict)` -> the normalised, concatenated (B, D)."""

    def __init__(self, spec: ObservationSpec, clip: float = 10.0, min_std: float = 1e-2) -> None:
        super().__init__()
        self.spec = check_spec(spec)
        self.norms = nn.ModuleDict({key: RunningNorm(dim, clip, min_std) for key, dim in self.spec.items()})

    def update(self, obs: dict[str, torch.Tensor]) -> None:
        for key, norm in self.norms.items():
            norm.update(obs[key])

    def freeze(self) -> None:
        for norm in self.norms.values():
            norm.freeze()

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.norms[key].normalize(obs[key]) for key in self.spec], dim=-1)

    def stats(self) -> dict[str, dict[str, list[float]]]:
        """{key: {"mean": [...], "std": [...]}} as plain floats (for the manifest)."""
        return {
            key: {"mean": norm.mean.cpu().tolist(), "std": norm.std().cpu().tolist()}
            for key, norm in self.norms.items()
        }


# --- networks --------------------------------------------------------------------------------


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, layer_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width)] + ([nn.LayerNorm(width)] if layer_norm else []) + [nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def tanh_log_det_jacobian(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u) / du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), elementwise; the
    right-hand form stays finite where tanh(u) rounds to +-1."""
    return 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))


class Actor(nn.Module):
    """pi(a|s): a = tanh(u), u ~ N(mean(s), std(s)), on the normalised observation vector (B, D)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.net = mlp(obs_dim, hidden, 2 * action_dim)

    def distribution_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the pre-tanh Gaussian; log_std squashed smoothly into its bounds."""
        mean, raw_log_std = self.net(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1.0)
        return mean, log_std

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action (B, A) in (-1, 1) and its log-probability (B,) under the squashed
        distribution: log N(u) - sum log(1 - tanh(u)^2)."""
        mean, log_std = self.distribution_params(obs)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        pre_tanh = mean + log_std.exp() * noise
        gaussian_log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1)
        log_prob = gaussian_log_prob - tanh_log_det_jacobian(pre_tanh).sum(-1)
        return torch.tanh(pre_tanh), log_prob

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """tanh(mean): the action served on the robot."""
        return torch.tanh(self.distribution_params(obs)[0])


class Critic(nn.Module):
    """Q(s, a) on the normalised observation vector and the action -> (B,)."""

    def __init__(
        self, obs_dim: int, action_dim: int, hidden: tuple[int, ...] = (256, 256), layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim + action_dim, hidden, 1, layer_norm)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


# --- the algorithm ---------------------------------------------------------------------------


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SAC:
    """Actor, twin critics with Polyak-averaged targets, learned temperature, normalisers.

    `update(batch)` is one gradient step of each; `act(obs)` picks actions for the environment;
    `state_dict()` / `load_state_dict()` checkpoint everything needed to resume training.
    """

    def __init__(
        self,
        spec: ObservationSpec,
        action_dim: int,
        config: SACConfig | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(action_dim, bool) or not isinstance(action_dim, int | np.integer) or action_dim <= 0:
            raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
        self.spec = check_spec(spec)
        self.action_dim = int(action_dim)
        self.config = config or SACConfig()
        unknown = sorted(set(self.config.feature_noise) - set(self.spec))
        if unknown:
            raise ValueError(f"feature_noise names key(s) {unknown} that are not in the spec {list(self.spec)}")
        self.device = torch.device(device) if device is not None else default_device()
        self.target_entropy = (
            float(self.config.target_entropy) if self.config.target_entropy is not None else -float(self.action_dim)
        )
        obs_dim = sum(self.spec.values())
        hidden = tuple(self.config.hidden)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
            torch.manual_seed(seed)
            self.normalizer = ObservationNormalizer(self.spec, self.config.obs_clip, self.config.min_std)
            self.actor = Actor(obs_dim, self.action_dim, hidden)
            self.critics = nn.ModuleList(
                [Critic(obs_dim, self.action_dim, hidden, self.config.critic_layer_norm) for _ in range(2)]
            )
        self.critics_target = copy.deepcopy(self.critics)
        self.critics_target.requires_grad_(False)
        for module in (self.normalizer, self.actor, self.critics, self.critics_target):
            module.to(self.device)
        self.log_alpha = torch.tensor(math.log(self.config.initial_alpha), device=self.device, requires_grad=True)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=self.config.lr)
        self.critic_optimizer = torch.optim.Adam(self.critics.parameters(), lr=self.config.lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=self.config.lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.updates = 0

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # -- inputs ----------------------------------------------------------------------------

    def _obs_tensors(self, obs: dict[str, Any], batch: int | None, where: str) -> dict[str, torch.Tensor]:
        """Raw observation dict -> float32 tensors (B, dim) on the device; checks keys and shapes."""
        if not isinstance(obs, dict):
            raise TypeError(f"{where} must be a dict {{key: array}}, got {type(obs).__name__}")
        missing = [key for key in self.spec if key not in obs]
        if missing:
            raise ValueError(f"{where} lacks key(s) {missing}; the spec is {self.spec}")
        out = {}
        for key, dim in self.spec.items():
            value = torch.as_tensor(obs[key], dtype=torch.float32, device=self.device)
            if value.ndim != 2 or value.shape[1] != dim or (batch is not None and value.shape[0] != batch):
                expected = f"({batch if batch is not None else 'B'}, {dim})"
                raise ValueError(f"{where}[{key!r}] has shape {tuple(value.shape)}, expected {expected}")
            out[key] = value
        return out

    def _batch_tensors(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], ...]:
        if not isinstance(batch, dict):
            raise TypeError(f"batch must be a dict, got {type(batch).__name__}")
        if "done" not in batch and "terminated" in batch:  # replay.py's name for the same flag
            batch = {**batch, "done": batch["terminated"]}
        missing = [k for k in ("obs", "action", "reward", "next_obs", "done") if k not in batch]
        if missing:
            raise ValueError(f"batch lacks key(s) {missing} ('terminated' is accepted for 'done')")
        action = torch.as_tensor(batch["action"], dtype=torch.float32, device=self.device)
        if action.ndim != 2 or action.shape[1] != self.action_dim:
            raise ValueError(f"batch['action'] has shape {tuple(action.shape)}, expected (B, {self.action_dim})")
        size = action.shape[0]
        reward = torch.as_tensor(batch["reward"], dtype=torch.float32, device=self.device)
        done = torch.as_tensor(batch["done"], dtype=torch.float32, device=self.device)
        for name, value in (("reward", reward), ("done", done)):
            if tuple(value.shape) != (size,):
                raise ValueError(f"batch[{name!r}] has shape {tuple(value.shape)}, expected ({size},)")
        obs = self._obs_tensors(batch["obs"], size, "batch['obs']")
        next_obs = self._obs_tensors(batch["next_obs"], size, "batch['next_obs']")
        for name, value in (("action", action), ("reward", reward), ("done", done)):
            if not torch.isfinite(value).all():
                raise ValueError(f"batch[{name!r}] contains NaN or inf")
        return obs, action, reward, next_obs, done

    # -- normalisation -------------------------------------------------------------------------

    def update_normalizer(self, obs: dict[str, Any]) -> None:
        """Add raw observations ({key: (B, dim)}, e.g. demonstrations or new transitions) to the
        running statistics (ignored once frozen)."""
        self.normalizer.update(self._obs_tensors(obs, None, "obs"))

    def freeze_normalizer(self) -> None:
        self.normalizer.freeze()

    # -- one gradient step ---------------------------------------------------------------------

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One SAC step on `batch` (see the module docstring); returns critic_loss, actor_loss,
        alpha_loss, alpha (after the step), entropy (-mean log pi of the actor's samples), q_mean."""
        obs_raw, action, reward, next_obs_raw, done = self._batch_tensors(batch)
        obs = self._with_feature_noise(self.normalizer(obs_raw))
        next_obs = self._with_feature_noise(self.normalizer(next_obs_raw))
        alpha = self.log_alpha.detach().exp()

        # 1. critics, towards the soft Bellman target of the target networks
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_obs, self.generator)
            next_q = torch.min(*(q(next_obs, next_action) for q in self.critics_target))
            target = reward + self.config.gamma * (1.0 - done) * (next_q - alpha * next_log_prob)
        q_values = [q(obs, action) for q in self.critics]
        critic_loss = sum(F.mse_loss(q, target) for q in q_values)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # 2. actor, through the (just updated) critics; their gradients are not kept
        new_action, log_prob = self.actor.sample(obs, self.generator)
        self.critics.requires_grad_(False)
        q_new = torch.min(*(q(obs, new_action) for q in self.critics))
        self.critics.requires_grad_(True)
        actor_loss = (alpha * log_prob - q_new).mean()
        bc_loss = torch.zeros((), device=self.device)
        if self.config.bc_weight > 0 and batch.get("demo") is not None:
            demo = torch.as_tensor(batch["demo"], dtype=torch.bool, device=self.device)
            if demo.any():
                better = None  # without the Q-filter every demo row is cloned: no critic pass needed
                if self.config.bc_q_filter:
                    with torch.no_grad():  # Q-filter: clone the demo action only where the critics prefer it
                        q_demo = torch.min(*(q(obs[demo], action[demo]) for q in self.critics))
                        better = (q_demo > q_new[demo].detach()).float()
                error = ((self.actor.deterministic(obs[demo]) - action[demo]) ** 2).sum(-1)
                bc_loss = (error if better is None else better * error).mean()
                actor_loss = actor_loss + self.config.bc_weight * bc_loss
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        # 3. temperature: alpha grows while the entropy is below target, shrinks above it
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()

        # 4. Polyak averaging of the target critics
        with torch.no_grad():
            for target_param, param in zip(self.critics_target.parameters(), self.critics.parameters(), strict=True):
                target_param.lerp_(param, self.config.tau)
        self.updates += 1
        return {
            "critic_loss": float(critic_loss.detach()),
            "actor_loss": float(actor_loss.detach()),
            "bc_loss": float(bc_loss.detach()),
            "alpha_loss": float(alpha_loss.detach()),
            "alpha": self.alpha,
            "entropy": float(-log_prob.detach().mean()),
            "q_mean": float(torch.stack(q_values).detach().mean()),
        }

    def _with_feature_noise(self, normalized: torch.Tensor) -> torch.Tensor:
        """`config.feature_noise`: N(0, std^2) added to the named keys' columns (training only)."""
        if not self.config.feature_noise:
            return normalized
        out, start = normalized.clone(), 0
        for key, dim in self.spec.items():
            std = self.config.feature_noise.get(key, 0.0)
            if std > 0:
                noise = torch.randn((out.shape[0], dim), generator=self.generator, device=out.device, dtype=out.dtype)
                out[:, start : start + dim] += std * noise
            start += dim
        return out

    # -- acting --------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: dict[str, Any], deterministic: bool = False) -> np.ndarray:
        """Raw observation ({key: (dim,)} or {key: (B, dim)}) -> action (A,) or (B, A) in [-1, 1],
        float32 numpy. Stochastic unless `deterministic` (then tanh of the Gaussian mean)."""
        if not isinstance(obs, dict):
            raise TypeError(f"obs must be a dict {{key: array}}, got {type(obs).__name__}")
        single = all(np.ndim(obs[key]) == 1 for key in self.spec if key in obs)
        tensors = self._obs_tensors({k: (np.asarray(v)[None] if single else v) for k, v in obs.items()}, None, "obs")
        for key, value in tensors.items():
            if not torch.isfinite(value).all():
                raise ValueError(f"obs[{key!r}] contains NaN or inf")
        normalized = self.normalizer(tensors)
        if deterministic:
            action = self.actor.deterministic(normalized)
        else:
            action = self.actor.sample(normalized, self.generator)[0]
        action = action.cpu().numpy()
        return action[0] if single else action

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, targets, optimisers, log alpha, normalisers,
        config, spec, action_dim, update count, the sampling generator's state."""
        return {
            "spec": dict(self.spec),
            "action_dim": self.action_dim,
            "config": self.config.to_dict(),
            "actor": self.actor.state_dict(),
            "critics": self.critics.state_dict(),
            "critics_target": self.critics_target.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "log_alpha": self.log_alpha.detach().cpu().clone(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; refuses one from another spec or action size."""
        if dict(state.get("spec", {})) != self.spec or state.get("action_dim") != self.action_dim:
            raise ValueError(
                f"checkpoint is for spec {state.get('spec')} with action_dim {state.get('action_dim')}, "
                f"this SAC has spec {self.spec} with action_dim {self.action_dim}"
            )
        self.actor.load_state_dict(state["actor"])
        self.critics.load_state_dict(state["critics"])
        self.critics_target.load_state_dict(state["critics_target"])
        self.normalizer.load_state_dict(state["normalizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].to(self.device))
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        if state.get("generator_device") == self.device.type:  # a CUDA generator state does not fit a CPU one
            self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device | None = None) -> SAC:
        """A SAC rebuilt from a checkpoint (its spec, action size and config)."""
        sac = cls(state["spec"], state["action_dim"], SACConfig.from_dict(state["config"]), device=device)
        sac.load_state_dict(state)
        return sac


__all__ = [
    "Actor",
    "Critic",
    "ObservationNormalizer",
    "ObservationSpec",
    "RunningNorm",
    "SAC",
    "SACConfig",
    "check_spec",
    "default_device",
    "tanh_log_det_jacobian",
    "vector_spec",
]
