"""`omnimodel serve`: a run's native policy behind openpi's websocket protocol (msgpack + numpy), no torch.

Protocol (as openpi-client 0.1.2's WebsocketClientPolicy speaks it): on connect the server sends
its metadata (a msgpack map); each request is an observation map packed with openpi's numpy
encoding ({b"__ndarray__": True, b"data", b"dtype", b"shape"}); the reply is
{"actions": float32 (chunk, action_dim), "server_timing": {"infer_ms", "queue_ms"}} packed the
same way. A bad request gets a text frame naming the problem (the client raises it) and the
connection stays open. Requests are run one at a time, in arrival order, from a bounded queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import msgpack
import numpy as np

from omnimodel.errors import ConfigError, OmniError

log = logging.getLogger(__name__)

QUEUE_BOUND = 8  # requests waiting for the policy; one more gets an error reply
MAX_MESSAGE_BYTES = 16 << 20


@dataclass(frozen=True)
class ObservationKeys:
    """The openpi (LIBERO example) keys one arch reads: images in the policy's camera order, state or None."""

    images: tuple[str, ...]
    state: str | None
    prompt: str = "prompt"


class ObservationError(OmniError):
    """An observation lacks a key or holds the wrong dtype or shape."""


# ---------------------------------------------------------------- openpi's msgpack-numpy encoding
def _pack_default(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "VOc":
            raise TypeError(f"cannot send a {obj.dtype} array")
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot pack {type(obj).__name__}")


def _unpack_hook(obj: dict):
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=tuple(obj[b"shape"]))
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def pack(obj) -> bytes:
    """Bytes of `obj` in openpi's msgpack-numpy encoding."""
    return msgpack.packb(obj, default=_pack_default)


def unpack(data: bytes):
    """The object packed by openpi's msgpack-numpy encoding."""
    return msgpack.unpackb(data, object_hook=_unpack_hook)


# ---------------------------------------------------------------- observation -> policy inputs
def run_arch(run_dir: Path) -> str:
    """The run's architecture: plan.json "arch", else report.json "model", else the GGUF's general.architecture."""
    for name, key in (("plan.json", "arch"), ("report.json", "model")):
        path = run_dir / name
        if path.exists():
            arch = json.loads(path.read_text()).get(key)
            if arch:
                return str(arch)
    gguf_path = run_dir / "model.gguf"
    if gguf_path.exists():
        from gguf import GGUFReader

        field = GGUFReader(str(gguf_path)).get_field("general.architecture")
        if field is not None:
            return bytes(field.parts[field.data[0]]).decode()
    raise ConfigError(
        f"{run_dir}: no plan.json, report.json or model.gguf naming the arch; finish the port first"
    )


def keys_for(arch: str) -> ObservationKeys:
    """The observation keys of an arch (its Arch.observation_keys(), general.architecture / plan.json "arch")."""
    from omnimodel import archs

    keys = archs.get(arch).observation_keys()
    return ObservationKeys(
        images=tuple(keys["images"]), state=keys.get("state"), prompt=keys.get("prompt", "prompt")
    )


def read_observation(
    obs, keys: ObservationKeys, image_size: int, state_dim: int
) -> tuple[list[np.ndarray], np.ndarray, str]:
    """(images, state, prompt) from an openpi observation; ObservationError names the first bad key."""
    if not isinstance(obs, dict):
        raise ObservationError(f"the observation must be a map of keys to values, got {type(obs).__name__}")
    images = []
    for key in keys.images:
        img = obs.get(key)
        want = f"uint8 array of shape ({image_size}, {image_size}, 3)"
        if not isinstance(img, np.ndarray):
            raise ObservationError(
                f"{key}: missing; expected a {want}"
                if img is None
                else f"{key}: expected a {want}, got {type(img).__name__}"
            )
        if img.dtype != np.uint8 or img.shape != (image_size, image_size, 3):
            raise ObservationError(f"{key}: expected a {want}, got {img.dtype} {img.shape}")
        images.append(img)
    state = np.zeros(0, np.float32)
    if keys.state is not None:
        s = obs.get(keys.state)
        want = f"float array of shape ({state_dim},)"
        if not isinstance(s, np.ndarray):
            raise ObservationError(
                f"{keys.state}: missing; expected a {want}"
                if s is None
                else f"{keys.state}: expected a {want}, got {type(s).__name__}"
            )
        if s.dtype.kind != "f" or s.shape != (state_dim,):
            raise ObservationError(f"{keys.state}: expected a {want}, got {s.dtype} {s.shape}")
        if not np.isfinite(s).all():
            raise ObservationError(f"{keys.state}: holds NaN or Inf; expected finite values")
        state = s.astype(np.float32)
    prompt = obs.get(keys.prompt)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ObservationError(
            f"{keys.prompt}: expected a non-empty string (the instruction), got {type(prompt).__name__}"
        )
    return images, state, prompt


# ---------------------------------------------------------------- the server
class PolicyServer:
    """One native policy served over websockets; requests run one at a time on one worker thread."""

    def __init__(self, policy, arch: str, model: str = "", queue_bound: int = QUEUE_BOUND):
        self.policy = policy
        self.arch = arch
        self.keys = keys_for(arch)
        if self.keys.state is not None and policy.proprio_dim == 0:
            # a checkpoint of the arch that reads no state (openpi pi05_libero): the request's is not read
            self.keys = ObservationKeys(images=self.keys.images, state=None, prompt=self.keys.prompt)
        # fewer cameras than image slots is fine: the library masks the empty slots (π's empty_cameras)
        if not 1 <= len(self.keys.images) <= policy.n_images or (self.keys.state is None) != (
            policy.proprio_dim == 0
        ):
            raise ConfigError(
                f"arch {arch}: the library takes up to {policy.n_images} images and {policy.proprio_dim} state values, "
                f"but the arch's observation_keys() name {len(self.keys.images)} images and state={self.keys.state}; fix the table"
            )
        self.model = model
        self.queue_bound = queue_bound
        self.served = 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omni-policy")
        self._queue: asyncio.Queue | None = None

    def metadata(self) -> dict:
        """What the server sends on connect."""
        p = self.policy
        return {
            "server": "omnimodel", "arch": self.arch, "model": self.model, "n_images": p.n_images,
            "image_size": p.image_size, "state_dim": p.proprio_dim, "action_chunk": p.chunk,
            "action_dim": p.action_dim, "image_keys": list(self.keys.images), "state_key": self.keys.state,
            "prompt_key": self.keys.prompt, "queue_bound": self.queue_bound,
            "torch_imported": "torch" in sys.modules,
        }  # fmt: skip

    def infer(self, obs) -> dict:
        """One request, synchronously: the reply map (raises ObservationError or the policy's error)."""
        images, state, prompt = read_observation(
            obs, self.keys, self.policy.image_size, self.policy.proprio_dim
        )
        t0 = time.perf_counter()
        actions = self.policy.predict_action(images, state, prompt)
        return {
            "actions": np.asarray(actions, np.float32),
            "server_timing": {"infer_ms": (time.perf_counter() - t0) * 1e3},
        }

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            obs, fut, queued_at = await self._queue.get()
            try:
                reply = await loop.run_in_executor(self._worker, self.infer, obs)
                reply["server_timing"]["queue_ms"] = (time.perf_counter() - queued_at) * 1e3 - reply[
                    "server_timing"
                ]["infer_ms"]
                self.served += 1
                if not fut.done():
                    fut.set_result(reply)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to its client as an error reply
                if not fut.done():
                    fut.set_exception(exc)

    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._converse(ws)
        except ConnectionClosed:
            log.info("client left: %s", ws.remote_address)

    async def _converse(self, ws) -> None:
        await ws.send(pack(self.metadata()))
        async for message in ws:
            try:
                if isinstance(message, str):
                    raise ObservationError("expected a binary msgpack frame, got text")
                try:
                    obs = unpack(message)
                except Exception as exc:  # noqa: BLE001 - any decoding failure is the client's
                    raise ObservationError(f"the request is not openpi msgpack-numpy ({exc})") from None
                fut = asyncio.get_running_loop().create_future()
                try:
                    self._queue.put_nowait((obs, fut, time.perf_counter()))
                except asyncio.QueueFull:
                    raise ObservationError(
                        f"server busy: {self.queue_bound} requests already queued; retry later"
                    ) from None
                await ws.send(pack(await fut))
            except Exception as exc:  # noqa: BLE001 - reply with the error, keep the connection
                log.info("request failed: %s", exc)
                await ws.send(f"error: {exc}")

    @staticmethod
    def _health(connection, request):
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async def serve(self, host: str, port: int, on_ready: Callable[[str, int], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM; on_ready(host, port) is called once listening."""
        from websockets.asyncio.server import serve

        self._queue = asyncio.Queue(maxsize=self.queue_bound)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        consumer = asyncio.create_task(self._consume())
        async with serve(self._handle, host, port, process_request=self._health, compression=None,
                         max_size=MAX_MESSAGE_BYTES) as server:  # fmt: skip
            bound = server.sockets[0].getsockname()
            if on_ready:
                on_ready(bound[0], bound[1])
            await stop
        consumer.cancel()
        self._worker.shutdown(wait=True)


def serve_run(run_dir: Path, host: str, port: int, *, checkpoint: Path | None = None, n_threads: int = 0,
              queue_bound: int = QUEUE_BOUND, on_ready: Callable[[str, int], None] | None = None) -> int:  # fmt: skip
    """Load a run's native policy and serve it until interrupted; returns the number of requests served."""
    from omnimodel import runtime

    run_dir = Path(run_dir)
    arch = run_arch(run_dir)
    keys_for(arch)
    with runtime.load(run_dir, checkpoint=checkpoint, n_threads=n_threads) as policy:
        server = PolicyServer(policy, arch, model=run_dir.name, queue_bound=queue_bound)
        asyncio.run(server.serve(host, port, on_ready))
        return server.served
