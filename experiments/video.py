"""Record one episode of a policy in the real Gymnasium env as a GIF (Pillow) or an MP4 (imageio + ffmpeg).

Frames come from ``agents.evaluation.make_env(env_id, render_mode="rgb_array")`` (the env every method evaluates
on): the gridworlds and MiniGrid draw them with numpy; CartPole's renderer needs pygame. Both pygame and the MP4
writer are optional (``pip install -e ".[video]"``); when one is missing the error says so in one line. GIFs need
only Pillow, which matplotlib already installs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.evaluation import make_env
from experiments.runner import MissingExtraError
from gumbel_rl.files import atomic_path

VIDEO_EXTRA = 'pip install -e ".[video]"'
VIDEO_FORMATS = (".gif", ".mp4")


def check_video_path(path: str | os.PathLike) -> Path:
    """``path`` if it ends in .gif or .mp4 (and, for .mp4, imageio with ffmpeg is installed).

    Raises:
        ValueError: another extension.
        MissingExtraError: .mp4 without imageio / imageio-ffmpeg.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise ValueError(f"video file {str(path)!r} must end in {' or '.join(VIDEO_FORMATS)}")
    if suffix == ".mp4":
        try:
            import imageio.v2  # noqa: F401
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            message = f"writing MP4 needs imageio and imageio-ffmpeg: {VIDEO_EXTRA} (or write a .gif)"
            raise MissingExtraError(message) from None
    return path


def record_episode(
    policy: Any, env_id: str, deterministic: bool = True, seed: int = 0, max_frames: int = 5_000
) -> tuple[list[np.ndarray], float]:
    """Frames (H x W x 3 uint8 arrays, the first after reset) and the return of one episode of ``policy`` (anything
    with SB3's ``predict``) in ``make_env(env_id, render_mode="rgb_array")`` reset with ``seed``. Stochastic
    actions draw from torch's generator seeded with ``seed`` (restored afterwards).

    Raises:
        MissingExtraError: the env's renderer needs a package that is not installed (pygame for CartPole).
        ValueError: the env cannot render ``rgb_array`` frames.
    """
    try:
        env = make_env(env_id, render_mode="rgb_array")
    except gym.error.Error as exc:
        raise ValueError(f"{env_id} cannot render rgb_array frames: {exc}") from None
    frames: list[np.ndarray] = []
    total = 0.0
    try:
        obs, _ = env.reset(seed=seed)
        try:
            frames.append(np.asarray(env.render()))
        except gym.error.DependencyNotInstalled:
            raise MissingExtraError(f"rendering {env_id} needs pygame: {VIDEO_EXTRA}") from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            done = False
            while not done and len(frames) < max_frames:
                action, _ = policy.predict(obs, deterministic=deterministic)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
                frames.append(np.asarray(env.render()))
    finally:
        env.close()
    return frames, total


def write_video(frames: list[np.ndarray], path: str | os.PathLike, fps: float = 10.0) -> Path:
    """Write ``frames`` to ``path`` (.gif with Pillow, .mp4 with imageio), atomically. Returns the path.

    Raises:
        ValueError: no frames or an unsupported extension; MissingExtraError: .mp4 without imageio-ffmpeg.
    """
    path = check_video_path(path)
    if not frames:
        raise ValueError("no frames to write")
    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        else:
            import imageio.v2 as imageio

            imageio.mimwrite(tmp, [np.asarray(f, dtype=np.uint8) for f in frames], fps=fps, format="FFMPEG")
    return path


def env_fps(env_id: str, default: float = 10.0) -> float:
    """The env's ``metadata["render_fps"]`` (Gymnasium's playback rate), else ``default``."""
    env = make_env(env_id)
    try:
        return float(env.metadata.get("render_fps") or default)
    finally:
        env.close()
