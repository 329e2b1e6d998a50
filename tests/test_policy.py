"""GumbelPolicy: SB3's predict protocol, save/load from the file alone, clear errors."""

import json
import os
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from gumbel_rl import GumbelPolicy
from gumbel_rl.policy import resolve_device

BOX = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT = gym.spaces.Discrete(2)


def make_policy(obs_space=BOX, act_space=ACT, seed=0, **kw) -> GumbelPolicy:
    torch.manual_seed(seed)
    policy = GumbelPolicy(obs_space, act_space, **kw)
    with torch.no_grad():  # a non-trivial policy: the small initial head gives near-uniform actions
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return policy


def test_predict_single_and_batched_box():
    policy = make_policy()
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    actions, state = policy.predict(obs, deterministic=True)
    assert actions.shape == (5,) and actions.dtype == np.int64 and state is None
    logits = policy(torch.as_tensor(obs))
    assert np.array_equal(actions, logits.argmax(-1).numpy())
    single, _ = policy.predict(obs[0], deterministic=True)
    assert single.shape == () and single == actions[0]


def test_predict_discrete_observations_and_action_start():
    obs_space, act_space = gym.spaces.Discrete(6), gym.spaces.Discrete(4, start=1)
    policy = make_policy(obs_space, act_space)
    actions, _ = policy.predict(np.arange(6), deterministic=True)
    logits = policy(torch.eye(6))
    assert np.array_equal(actions, logits.argmax(-1).numpy() + 1)
    assert policy.predict(3, deterministic=True)[0] == actions[3]


def test_stochastic_predict_samples_the_policy():
    policy = make_policy(seed=1)
    obs = np.array([0.3, -0.2, 0.05, 0.1], dtype=np.float32)
    torch.manual_seed(2)
    actions, _ = policy.predict(np.repeat(obs[None], 50_000, axis=0))
    probs = torch.softmax(policy(torch.as_tensor(obs)).double(), -1).detach().numpy()
    counts = np.bincount(actions, minlength=2)
    assert stats.chisquare(counts, probs * 50_000).pvalue > 1e-3


def test_sb3_evaluate_policy_equals_a_plain_gymnasium_loop():
    policy = make_policy(seed=3)
    venv = make_vec_env("CartPole-v1", n_envs=1, seed=7)
    mean, _ = evaluate_policy(policy, venv, n_eval_episodes=3, deterministic=True)
    env, returns = gym.make("CartPole-v1"), []
    obs, _ = env.reset(seed=7)
    for _ in range(3):
        total, done = 0.0, False
        while not done:
            action, _ = policy.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
        obs, _ = env.reset()
    assert mean == pytest.approx(np.mean(returns))


def test_save_load_round_trip(tmp_path):
    policy = make_policy(seed=4, net_arch=(32, 16), activation="relu", estimator="gumbel-rao", tau=0.3, k=5)
    path = policy.save(tmp_path / "policy.pt", extra={"env_id": "CartPole-v1"})
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt"]  # no temporary file left behind
    loaded = GumbelPolicy.load(path)
    assert loaded.config() == policy.config()
    assert GumbelPolicy.read_metadata(path)["extra"] == {"env_id": "CartPole-v1"}
    obs = np.random.default_rng(5).normal(size=(100, 4)).astype(np.float32)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], policy.predict(obs, deterministic=True)[0])
    torch.manual_seed(6)
    a = policy.predict(obs)[0]
    torch.manual_seed(6)
    assert np.array_equal(loaded.predict(obs)[0], a)
    x = torch.as_tensor(obs)
    assert torch.equal(loaded(x), policy(x))


def test_load_refuses_truncated_foreign_and_missing_files(tmp_path):
    path = make_policy().save(tmp_path / "policy.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        GumbelPolicy.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a gumbel-rl/GumbelPolicy file"):
        GumbelPolicy.load(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "gumbel-rl/GumbelPolicy", "obj": np.random.default_rng()}, pickled)
    with pytest.raises(ValueError, match="truncated or corrupt"):  # weights_only refuses arbitrary objects
        GumbelPolicy.load(pickled)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        GumbelPolicy.load(text)
    with pytest.raises(FileNotFoundError, match="no such file"):
        GumbelPolicy.load(tmp_path / "missing.pt")


def test_bad_inputs():
    with pytest.raises(ValueError, match="needs a Discrete action space, got Box"):
        GumbelPolicy(BOX, gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="unsupported observation space Dict"):
        GumbelPolicy(gym.spaces.Dict({"a": BOX}), ACT)
    with pytest.raises(ValueError, match="unknown activation 'swish'; valid activations: tanh"):
        GumbelPolicy(BOX, ACT, activation="swish")
    with pytest.raises(ValueError, match="tau"):
        GumbelPolicy(BOX, ACT, tau=0.0)
    policy = make_policy()
    with pytest.raises(ValueError, match=r"logits of shape \(5, 3\) do not fit this policy: expected \(..., 2\)"):
        policy.distribution_from_logits(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"observation of shape \(3,\) fits neither \(4,\)"):
        policy.predict(np.zeros(3, dtype=np.float32))
    disc = make_policy(gym.spaces.Discrete(3), ACT)
    with pytest.raises(ValueError, match="out of range"):
        disc.predict(np.array([0, 5]))


def test_resolve_device():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_load_error_never_advises_weights_only_false(tmp_path):
    """A pickle that would run code, and a truncated file: one line naming the file, no torch retry advice."""
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    malicious = tmp_path / "malicious.pt"
    torch.save({"format": "gumbel-rl/GumbelPolicy", "obj": RunsCode()}, malicious)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(make_policy().save(tmp_path / "policy.pt").read_bytes()[:-100])
    for path, detail in (
        (malicious, r"a Python object \(posix.system\) that gumbel-rl never unpickles"),
        (truncated, ""),
    ):
        for load in (GumbelPolicy.load, GumbelPolicy.read_metadata):
            with pytest.raises(ValueError) as info:
                load(path)
            msg = str(info.value)
            assert msg.startswith(f"{path}: not a readable gumbel-rl file (truncated or corrupt"), msg
            assert re.search(detail, msg) and "\n" not in msg and "weights_only" not in msg, msg
            assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not marker.exists()


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ("{not json", r"metadata: JSONDecodeError"),
        ("[1, 2]", r"metadata is a list, not an object"),
        ('{"config": 3}', r"TypeError: metadata 'config' must be a JSON object, got int"),
        ('{"config": {}}', r"missing entry 'observation_space'"),
        (None, r"metadata: TypeError"),
    ],
)
def test_bad_metadata_error_names_the_file(tmp_path, metadata, reason):
    path = make_policy().save(tmp_path / "policy.pt")
    payload = torch.load(path, weights_only=True)
    payload["metadata"] = metadata
    torch.save(payload, path)
    with pytest.raises(ValueError, match=re.escape(f"{path}: not a valid gumbel-rl policy file (") + reason):
        GumbelPolicy.load(path)
    if reason.startswith("metadata"):  # read_metadata checks the metadata itself, not the config
        with pytest.raises(ValueError, match=re.escape(f"{path}: not a valid gumbel-rl policy file (") + reason):
            GumbelPolicy.read_metadata(path)


def test_bad_config_values_and_weights_name_the_file(tmp_path):
    policy = make_policy()
    path = policy.save(tmp_path / "policy.pt")
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata"])
    meta["config"]["activation"] = "swish"
    torch.save({**payload, "metadata": json.dumps(meta)}, path)
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}: not a valid gumbel-rl policy file (ValueError: unknown activation 'swish'"),
    ):
        GumbelPolicy.load(path)
    payload["state_dict"] = {k: v[:1] if v.dim() else v for k, v in payload["state_dict"].items()}
    torch.save(payload, path)
    with pytest.raises(ValueError) as info:
        GumbelPolicy.load(path)
    assert str(info.value).startswith(f"{path}: not a valid gumbel-rl policy file (RuntimeError: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("bad", "what"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")], ids=["nan", "inf", "-inf"]
)
def test_predict_refuses_non_finite_observations(bad, what):
    policy = make_policy()
    obs = np.zeros(4, dtype=np.float32)
    obs[2] = bad
    msg = rf"observation contains {what} at index \(2,\); the policy acts only on finite observations"
    for deterministic in (True, False):
        with pytest.raises(ValueError, match=msg):
            policy.predict(obs, deterministic=deterministic)
    batch = np.zeros((3, 4), dtype=np.float32)
    batch[1, 3] = bad
    with pytest.raises(ValueError, match=rf"observation contains {what} at index \(1, 3\)"):
        policy.predict(batch)
