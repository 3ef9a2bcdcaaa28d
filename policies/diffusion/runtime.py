"""Serving runtime of the diffusion family: numpy + onnxruntime only (never torch).

Per `act(observation)`: validate and normalise the observation, encode the frame with
`encoder.onnx` into the feature history (`history.FrameHistory`: the To most recent frames; after
`reset()` the first frame fills it), run the sampler loop of `schedulers.py` (DDIM or EDM, per
manifest["runtime"]) around `denoiser.onnx` (with the observation's extra condition vectors,
`manifest["runtime"]["extra_cond"]`, if any), un-normalise the Tp predicted actions and return the
executable slice:
the Ta actions from index To - 1, absolute joint targets (radians / metres, in
`manifest["outputs"]["joint_names"]` order); point i is due (i + 1) * dt after the observation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dexstack.policies.common import normalization
from dexstack.policies.common.onnx_session import open_session
from dexstack.policies.diffusion import history, schedulers, verify
from dexstack.runtime import ObservationError, check_observation

THREADS_ENV = "DEXSTACK_ORT_THREADS"
DEFAULT_THREADS = 1  # the robot computer also runs drivers or the sim; see bench/bench_diffusion.py
# Graph interface (written by export.py): the encoder's output, the denoiser's inputs (then the
# extra condition vectors) and output.
FEATURES, DENOISER_INPUTS, DENOISER_OUTPUT = "features", ["noisy_actions", "timestep", "cond"], "denoiser_out"


def _norm_arrays(norm: dict[str, Any] | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) with normalised = (raw - offset) * scale."""
    spec = normalization.parse(norm, where)
    if spec.type == "mean_std":
        return spec.mean, (1.0 / spec.std).astype(np.float32)
    if spec.type == "scale":
        return np.float32(-spec.offset / spec.scale), spec.scale
    return np.float32(0.0), np.float32(1.0)


class Runtime:
    """Diffusion policy runtime. State between calls: the feature history of the last To frames
    and the sampler's random generator; call `reset()` at the start of each episode."""

    def __init__(
        self,
        policy_dir: Path,
        manifest: dict[str, Any],
        threads: int | None = None,
        seed: int | None = 0,
        *,
        profile: Any = None,
        rate_hz: float | None = None,
    ) -> None:
        # The family registry's runtime signature (dexstack/families.py); a diffusion chunk is already
        # joint targets at outputs.dt, so neither the robot profile nor the node's rate changes it.
        del profile, rate_hz
        self.manifest = manifest
        self.policy_dir = Path(policy_dir)
        threads = threads or int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))
        graphs = manifest["graphs"]
        self._encoder = open_session(self.policy_dir / graphs["encoder"], threads)
        self._denoiser = open_session(self.policy_dir / graphs["denoiser"], threads)

        self._inputs: list[dict[str, Any]] = list(manifest["inputs"])
        rt = manifest.get("runtime") or {}
        # Extra condition vectors: observation inputs that go to the denoiser, not the encoder.
        self._extra_names: list[str] = list(rt.get("extra_cond") or [])
        names = [spec["name"] for spec in self._inputs if spec["name"] not in self._extra_names]
        missing = sorted(set(self._extra_names) - {spec["name"] for spec in self._inputs})
        if missing:
            raise ValueError(f"manifest runtime.extra_cond names {missing}, which are not inputs")
        got = sorted(i.name for i in self._encoder.get_inputs())
        if got != sorted(names):
            raise ValueError(f"{graphs['encoder']} takes inputs {got}, manifest lists {sorted(names)}")
        got = [i.name for i in self._denoiser.get_inputs()]
        if got != DENOISER_INPUTS + self._extra_names:
            raise ValueError(f"{graphs['denoiser']} takes inputs {got}, expected {DENOISER_INPUTS + self._extra_names}")
        self._rgb_names = [spec["name"] for spec in self._inputs if spec["kind"] == "rgb"]
        self._norms = {
            spec["name"]: _norm_arrays(spec.get("normalization"), f"input {spec['name']!r}") for spec in self._inputs
        }

        try:
            self.n_obs_steps, self.horizon = int(rt["n_obs_steps"]), int(rt["horizon"])
            self.n_action_steps, self.action_dim = int(rt["n_action_steps"]), int(rt["action_dim"])
            self.sampler = rt["sampler"]
            self.replan_every = int(rt.get("replan_every", 1))
            self._ddim, self._edm = dict(rt.get("ddim") or {}), dict(rt.get("edm") or {})
        except KeyError as exc:
            raise ValueError(f"manifest runtime lacks {exc.args[0]!r} (diffusion runtime settings)") from None
        if self.sampler not in ("ddim", "edm"):
            raise ValueError(f"manifest runtime.sampler is {self.sampler!r}; expected 'ddim' or 'edm'")
        if self.sampler == "ddim":
            self._alpha_bar = schedulers.alphas_cumprod(
                int(self._ddim["num_train_timesteps"]), self._ddim.get("beta_schedule", "squaredcos_cap_v2")
            )
            schedulers.ddim_timesteps(len(self._alpha_bar), int(self._ddim["steps"]))  # raises on a bad step count

        out = manifest["outputs"]
        self.joint_names: list[str] = list(out["joint_names"])
        self.chunk_length, self.dt = int(out["chunk_length"]), float(out["dt"])
        if len(self.joint_names) != self.action_dim:
            raise ValueError(
                f"outputs.joint_names has {len(self.joint_names)} joints, runtime.action_dim is {self.action_dim}"
            )
        if self.chunk_length != self.n_action_steps:
            raise ValueError(
                f"outputs.chunk_length={self.chunk_length} differs from runtime.n_action_steps={self.n_action_steps}"
            )
        if self.replan_every < 1 or self.n_obs_steps - 2 + self.replan_every + self.n_action_steps > self.horizon:
            raise ValueError(
                f"To - 1 + (replan_every - 1) + Ta = {self.n_obs_steps - 2 + self.replan_every + self.n_action_steps} "
                f"exceeds horizon {self.horizon} (or replan_every < 1)"
            )
        self._action_mean, self._action_std = normalization.chunk_mean_std(out)
        self._history = history.FrameHistory(self.n_obs_steps)
        # Earliest action token the training loss counted (PTP: To-1 minus the past tokens in the loss).
        past = int(rt.get("past_tokens_in_loss", self.n_obs_steps - 1))
        self._first_counted = history.first_counted_token(self.n_obs_steps, past)
        self._rng = np.random.default_rng(seed)
        # PTP self-verification (verify.py): off unless the manifest asks for it.
        setting = rt.get("self_verification")
        self.verifier = verify.SelfVerifier(setting, self._first_counted, past) if setting else None
        self.last_candidates: np.ndarray | None = None  # (N, Tp, A) normalised, with self-verification
        self._plan: np.ndarray | None = None  # (Tp, A) normalised: the sequence being executed
        self._since_plan = 0  # calls answered from the current plan

    def reset(self) -> None:
        """Start an episode: forget the feature history (and the executed actions, with self-verification)."""
        self._history.clear()
        self._plan, self._since_plan = None, 0
        if self.verifier is not None:
            self.verifier.reset()

    def encode(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """One frame -> its features (F,) float32 (no state change). Raises ObservationError."""
        check_observation(observation, self._inputs)
        for name in self._rgb_names:
            if np.asarray(observation[name]).dtype != np.uint8:
                raise ObservationError(f"{name}: dtype {np.asarray(observation[name]).dtype}, expected uint8 rgb")
        (features,) = self._encoder.run(
            [FEATURES],
            {name: self._normalized(observation, name) for name in self._norms if name not in self._extra_names},
        )
        return features[0]

    def _normalized(self, observation: dict[str, np.ndarray], name: str) -> np.ndarray:
        """The input `name` of the observation, normalised, as a batch of one (1, ...) float32."""
        offset, scale = self._norms[name]
        return ((np.asarray(observation[name], np.float32) - offset) * scale)[None].astype(np.float32)

    def _step(self, cond: np.ndarray, extra: dict[str, np.ndarray]) -> schedulers.StepFn:
        def step(x: np.ndarray, timestep: np.ndarray) -> np.ndarray:
            # Training hid the past tokens outside the loss (history.hold_uncounted_past).
            x = history.hold_uncounted_past(x, self._first_counted)
            (out,) = self._denoiser.run(
                [DENOISER_OUTPUT],
                {
                    "noisy_actions": np.ascontiguousarray(x, np.float32),
                    "timestep": timestep.astype(np.float32),
                    "cond": cond,
                    **extra,
                },
            )
            return out

        return step

    def sample(
        self, cond: np.ndarray, noise: np.ndarray | None = None, extra: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Condition (B, To * F) -> normalised action sequences (B, Tp, A) float32 with the
        manifest's sampler. `noise` (B, Tp, A) standard normal: the initial sample (drawn if None).
        `extra`: each extra condition vector of the manifest, (B, D) or (1, D) for the whole batch."""
        cond = np.ascontiguousarray(cond, np.float32)
        if cond.ndim != 2:
            raise ValueError(f"cond must be (B, C), got shape {cond.shape}")
        shape = (cond.shape[0], self.horizon, self.action_dim)
        if noise is None:
            noise = self._rng.standard_normal(shape).astype(np.float32)
        elif noise.shape != shape:
            raise ValueError(f"noise has shape {noise.shape}, expected {shape}")
        extra = extra or {}
        if sorted(extra) != sorted(self._extra_names):
            raise ValueError(f"extra condition vectors {sorted(extra)}; this policy takes {sorted(self._extra_names)}")
        feeds = {
            name: np.ascontiguousarray(np.broadcast_to(value, (shape[0], value.shape[-1])), np.float32)
            for name, value in extra.items()
        }
        step = self._step(cond, feeds)
        if self.sampler == "ddim":
            eta = float(self._ddim.get("eta", 0.0))
            return schedulers.ddim_sample(
                step, noise, self._alpha_bar, int(self._ddim["steps"]), eta, clip_sample=self._ddim.get("clip_sample")
            )
        e = self._edm
        return schedulers.edm_sample(
            step,
            noise,
            int(e["steps"]),
            float(e["sigma_min"]),
            float(e["sigma_max"]),
            float(e["rho"]),
            float(e["sigma_data"]),
            e.get("method", "euler"),
        )

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Observation (joint positions (J,), rgb (H, W, 3) uint8 per camera) -> (Ta, J) absolute
        joint targets, float64. Raises ObservationError on bad input (the history is unchanged).

        Samples a new plan (Tp actions) every `replan_every` calls; in between, call e of a plan
        returns its actions [To-1+e, To-1+e+Ta): the plan executes open loop, one action per call."""
        features = self.encode(observation)
        cond = self._history.push(features)[None]
        if self._plan is None or self._since_plan >= self.replan_every:
            extra = {name: self._normalized(observation, name) for name in self._extra_names}
            self._plan, self._since_plan = self._new_plan(cond, extra), 0
        start = self.n_obs_steps - 1 + self._since_plan
        self._since_plan += 1
        if self.verifier is not None:
            # The action at `start` is what executes before the next call (one call per policy
            # period), so it joins the executed history that the next verification compares with.
            self.verifier.record(self._plan[start])
        actions = self._plan.astype(np.float64) * self._action_std + self._action_mean
        return actions[start : start + self.n_action_steps]

    def _new_plan(self, cond: np.ndarray, extra: dict[str, np.ndarray]) -> np.ndarray:
        """(Tp, A) normalised: one sample, or with self-verification the best of N candidates
        sampled in one batch (verify.py)."""
        if self.verifier is None:
            return self.sample(cond, extra=extra)[0]
        self.last_candidates = self.sample(np.repeat(cond, self.verifier.num_candidates, axis=0), extra=extra)
        return self.last_candidates[self.verifier.choose(self.last_candidates)]
