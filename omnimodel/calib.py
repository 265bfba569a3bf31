"""Read LIBERO-style HDF5 demonstrations and build calibration / behaviour-cloning samples from them.

Works on real LIBERO files (`<task>_demo.hdf5` under a suite folder) and on `omnimodel suite
export` output. Images come back upright and 224x224, i.e. exactly what `predict_action` receives
in `omnimodel eval`: files in the "opengl" convention (LIBERO's raw one, and ours) are rotated
180 degrees; other sizes (LIBERO's 128x128) are resized with Lanczos. Actions are kept in LIBERO's
convention (gripper -1 open / +1 close); `policy_actions` maps them to the policy's training
convention (gripper 1 open / 0 close), which is what the policy predicts before `process_action`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from omnimodel.errors import CalibError

log = logging.getLogger(__name__)
IMAGE_SIZE = 224
CHUNK = 8
LONG_SUITE = "libero_10"
KNOWN_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


@dataclass
class Episode:
    """One demonstration: suite, task, instruction, and per-frame proprio (T, 8) and actions (T, 7).

    Images are read lazily from the file (`images(t)`, `agentview`, `wrist`) so that thousands of
    episodes fit in memory.
    """

    suite: str
    task: str
    instruction: str
    proprio: np.ndarray
    actions: np.ndarray
    path: Path
    demo: str
    flip: bool = True
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        """Number of frames (= actions) in the episode."""
        return len(self.actions)

    def _read(self, key: str, index) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return _prepare_images(f[f"data/{self.demo}/obs/{key}"][index], self.flip)

    def images(self, t: int) -> list[np.ndarray]:
        """[agentview, wrist] of frame t, upright 224x224x3 uint8 (the policy's view)."""
        return [self._read("agentview_rgb", t), self._read("eye_in_hand_rgb", t)]

    @property
    def agentview(self) -> np.ndarray:
        """All third-person frames (T, 224, 224, 3), upright."""
        if "agentview" not in self._cache:
            self._cache["agentview"] = self._read("agentview_rgb", slice(None))
        return self._cache["agentview"]

    @property
    def wrist(self) -> np.ndarray:
        """All wrist frames (T, 224, 224, 3), upright."""
        if "wrist" not in self._cache:
            self._cache["wrist"] = self._read("eye_in_hand_rgb", slice(None))
        return self._cache["wrist"]


def _prepare_images(img: np.ndarray, flip: bool) -> np.ndarray:
    """Rotate 180 degrees when stored upside down and resize to 224x224 (Lanczos) when needed."""
    img = np.asarray(img, dtype=np.uint8)
    if flip:
        img = img[..., ::-1, ::-1, :]
    if img.shape[-3:-1] != (IMAGE_SIZE, IMAGE_SIZE):
        from PIL import Image

        frames = img.reshape(-1, *img.shape[-3:])
        img = np.stack(
            [np.asarray(Image.fromarray(x).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)) for x in frames]
        ).reshape(*img.shape[:-3], IMAGE_SIZE, IMAGE_SIZE, 3)
    return np.ascontiguousarray(img)


def _attr_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_demo_file(path: str | Path, suite: str | None = None) -> list[Episode]:
    """All demonstrations of one `<task>_demo.hdf5` file."""
    path = Path(path)
    if not path.is_file():
        raise CalibError(f"demonstration file {path} does not exist; run `omnimodel suite export --out DIR`")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CalibError(f"{path} is not a readable HDF5 file ({exc}); re-export or re-download it") from exc
    with f:
        if "data" not in f:
            raise CalibError(f"{path} has no 'data' group: not a LIBERO-style demonstration file")
        data = f["data"]
        try:
            problem = json.loads(_attr_str(data.attrs["problem_info"]))
            instruction = problem["language_instruction"]
        except (KeyError, ValueError) as exc:
            raise CalibError(
                f"{path}: data.attrs['problem_info'] lacks a language_instruction ({exc})"
            ) from exc
        if isinstance(instruction, list):  # some LIBERO files store it as a list of words
            instruction = " ".join(instruction)
        suite = suite or problem.get("suite") or path.parent.name
        task = problem.get("task_name") or path.name.removesuffix(".hdf5").removesuffix("_demo")
        convention = _attr_str(data.attrs.get("macros_image_convention", "opengl"))
        demos = sorted((k for k in data if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))
        if not demos:
            raise CalibError(f"{path} holds no demo_N groups")
        episodes = []
        for key in demos:
            g = data[key]
            try:
                obs = g["obs"]
                proprio = np.concatenate([obs["ee_pos"][()], obs["ee_ori"][()], obs["gripper_states"][()]], 1)
                actions = g["actions"][()]
                shape = obs["agentview_rgb"].shape
                obs["eye_in_hand_rgb"]  # noqa: B018 - presence check
            except KeyError as exc:
                raise CalibError(
                    f"{path}:{key} lacks {exc}; expected LIBERO's obs/ and actions layout"
                ) from exc
            if (
                actions.ndim != 2
                or actions.shape[1] != 7
                or len(proprio) != len(actions)
                or shape[0] != len(actions)
            ):
                raise CalibError(
                    f"{path}:{key} is inconsistent: actions {actions.shape}, proprio {proprio.shape}, images {shape}"
                )
            episodes.append(
                Episode(
                    suite,
                    task,
                    str(instruction),
                    proprio.astype(np.float32),
                    actions.astype(np.float32),
                    path,
                    key,
                    flip=convention == "opengl",
                )  # fmt: skip
            )
    return episodes


def read_demos(root: str | Path) -> list[Episode]:
    """Every demonstration under `root` (a `*_demo.hdf5` file, a suite folder, or a folder of suite folders)."""
    root = Path(root)
    if root.is_file():
        return read_demo_file(root)
    if not root.is_dir():
        raise CalibError(
            f"demonstration directory {root} does not exist; run `omnimodel suite export --out {root}`"
        )
    files = sorted(root.rglob("*.hdf5"))
    if not files:
        raise CalibError(
            f"no *.hdf5 demonstration files under {root}; run `omnimodel suite export --out {root}`"
        )
    episodes = []
    for path in files:
        episodes.extend(read_demo_file(path))
    return episodes


def select_calibration(episodes: list[Episode], seed: int = 0) -> list[Episode]:
    """The paper's calibration rule: one episode per task description (three in the long suite), fixed seed."""
    groups: dict[tuple[str, str], list[Episode]] = defaultdict(list)
    for ep in episodes:
        groups[(ep.suite, ep.instruction)].append(ep)
    rng = np.random.default_rng(seed)
    chosen = []
    for (suite, instruction), eps in sorted(groups.items()):
        want = 3 if suite == LONG_SUITE else 1
        if len(eps) < want:
            raise CalibError(
                f"task {instruction!r} of {suite} has {len(eps)} demos, calibration needs {want}; "
                f"export with --episodes-per-task {want} or more"
            )
        for i in sorted(rng.choice(len(eps), size=want, replace=False)):
            chosen.append(eps[i])
    return chosen


def subsample_frames(episodes: list[Episode], n: int | None, seed: int = 0) -> list[tuple[int, int]]:
    """(episode index, frame index) pairs: all frames, or `n` of them drawn without replacement (--calib-frames)."""
    pairs = [(e, t) for e, ep in enumerate(episodes) for t in range(ep.num_frames)]
    if n is None or n >= len(pairs):
        return pairs
    if n < 1:
        raise CalibError("--calib-frames must be at least 1")
    idx = np.sort(np.random.default_rng(seed).choice(len(pairs), size=n, replace=False))
    return [pairs[i] for i in idx]


def policy_actions(actions: np.ndarray) -> np.ndarray:
    """LIBERO actions -> the policy's training convention: gripper 1 - clip(g, 0, 1) (1 open, 0 close)."""
    out = np.array(actions, dtype=np.float32, copy=True)
    out[..., 6] = 1.0 - np.clip(out[..., 6], 0.0, 1.0)
    return out


def action_chunks(actions: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """(T, chunk, 7) ground-truth chunks: frame t gets actions t..t+chunk-1, padded with the last action."""
    t = len(actions)
    idx = np.minimum(np.arange(t)[:, None] + np.arange(chunk)[None, :], t - 1)
    return np.asarray(actions)[idx]


@dataclass
class Sample:
    """One training / calibration sample: images [agentview, wrist], raw proprio (8), instruction, chunk (8, 7)."""

    images: list[np.ndarray]
    proprio: np.ndarray
    instruction: str
    actions: np.ndarray
    suite: str


class FrameDataset:
    """Frames of a list of episodes as samples with policy-convention action-chunk targets (for BC and calibration)."""

    def __init__(
        self, episodes: list[Episode], frames: list[tuple[int, int]] | None = None, chunk: int = CHUNK
    ):
        """Index `frames` (default: all) of `episodes`; chunk targets are precomputed (they are small)."""
        self.episodes = episodes
        self.frames = frames if frames is not None else subsample_frames(episodes, None)
        self.chunks = [action_chunks(policy_actions(ep.actions), chunk) for ep in episodes]
        self._files: dict[Path, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def _image(self, ep: Episode, key: str, t: int) -> np.ndarray:
        f = self._files.get(ep.path)
        if f is None:
            f = self._files[ep.path] = h5py.File(ep.path, "r")
        return _prepare_images(f[f"data/{ep.demo}/obs/{key}"][t], ep.flip)

    def __getitem__(self, k: int) -> Sample:
        e, t = self.frames[k]
        ep = self.episodes[e]
        images = [self._image(ep, "agentview_rgb", t), self._image(ep, "eye_in_hand_rgb", t)]
        return Sample(images, ep.proprio[t], ep.instruction, self.chunks[e][t], ep.suite)

    def batches(self, batch_size: int, seed: int = 0, shuffle: bool = True) -> Iterator[dict]:
        """Batches as dicts of stacked arrays: images (B, 2, 224, 224, 3) uint8, proprio (B, 8), actions (B, 8, 7), instructions."""
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(order), batch_size):
            samples = [self[int(k)] for k in order[start : start + batch_size]]
            yield {
                "images": np.stack([np.stack(s.images) for s in samples]),
                "proprio": np.stack([s.proprio for s in samples]),
                "actions": np.stack([s.actions for s in samples]),
                "instructions": [s.instruction for s in samples],
                "suites": [s.suite for s in samples],
            }

    def close(self) -> None:
        """Close the HDF5 files opened for image reads."""
        for f in self._files.values():
            f.close()
        self._files.clear()


def stat_block(x: np.ndarray) -> dict:
    """One dataset_statistics.json block (mean, std, max, min, q01, q99 per dimension)."""
    x = np.asarray(x, np.float64)
    return {
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "max": x.max(0).tolist(),
        "min": x.min(0).tolist(),
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
    }


def dataset_statistics(episodes: list[Episode]) -> dict:
    """The policy's per-dataset statistics (action on the policy convention, proprio), for dataset_statistics.json."""
    if not episodes:
        raise CalibError("no episodes to compute dataset statistics from")
    actions = np.concatenate([policy_actions(ep.actions) for ep in episodes]).astype(np.float64)
    proprio = np.concatenate([ep.proprio for ep in episodes]).astype(np.float64)


    action = stat_block(actions)
    action["mask"] = [True] * 6 + [False]
    return {
        "action": action,
        "proprio": stat_block(proprio),
        "num_transitions": int(len(actions)),
        "num_trajectories": len(episodes),
    }
