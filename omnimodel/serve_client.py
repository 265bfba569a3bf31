"""A policy behind `omnimodel serve` (or any openpi websocket policy server), as an eval policy.

The client side of openpi's protocol: connect, read the server's metadata, then one msgpack-numpy
observation map per request and one reply map ({"actions": ...}) or a text frame with the error.
The observation keys come from the metadata our server sends; an openpi server that sends none
gets the LIBERO example's keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from omnimodel.errors import ConfigError, OmniError
from omnimodel.serve import pack, unpack

LIBERO_KEYS = {
    "image_keys": ["observation/image", "observation/wrist_image"],
    "state_key": "observation/state",
    "prompt_key": "prompt",
}


class ServerError(OmniError):
    """The policy server refused a request or the connection failed."""


class RemotePolicy:
    """`predict_action(images, proprio, instruction)` answered by a websocket policy server at `url`."""

    backend = "server"

    def __init__(self, url: str, timeout: float = 60.0):
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"--server {url!r}: expected a websocket address such as ws://127.0.0.1:8000")
        from websockets.sync.client import connect

        self.url = url
        try:
            self._conn = connect(url, max_size=None, open_timeout=timeout, close_timeout=5)
            self._ws = self._conn.__enter__()  # websockets wants the context-manager form; close() exits it
            hello = self._ws.recv(timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ServerError(
                f"{url}: no policy server answers ({exc}); start one with `omnimodel serve RUN_DIR`"
            ) from None
        except Exception as exc:  # noqa: BLE001 - websockets' handshake errors are many classes
            raise ServerError(f"{url}: the websocket handshake failed ({exc})") from None
        meta = unpack(hello) if isinstance(hello, bytes) else {}
        self.metadata: dict[str, Any] = {**LIBERO_KEYS, **(meta if isinstance(meta, dict) else {})}
        self.timeout = timeout

    def predict_action(self, images: list[np.ndarray], proprio: np.ndarray, instruction: str) -> np.ndarray:
        """(chunk, action_dim) actions from the server for one observation."""
        keys = self.metadata["image_keys"]
        if len(images) != len(keys):
            raise ServerError(
                f"{self.url}: the server takes {len(keys)} images ({', '.join(keys)}), got {len(images)}"
            )
        obs: dict[str, Any] = {
            k: np.ascontiguousarray(im, np.uint8) for k, im in zip(keys, images, strict=True)
        }
        if self.metadata.get("state_key"):
            obs[self.metadata["state_key"]] = np.ascontiguousarray(proprio, np.float32).reshape(-1)
        obs[self.metadata["prompt_key"]] = instruction
        try:
            self._ws.send(pack(obs))
            reply = self._ws.recv(timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - a dropped connection or a timeout is one line
            raise ServerError(f"{self.url}: the request failed ({exc})") from None
        if isinstance(reply, str):
            raise ServerError(f"{self.url}: {reply}")
        out = unpack(reply)
        if not isinstance(out, dict) or "actions" not in out:
            raise ServerError(f"{self.url}: the reply holds no 'actions'")
        return np.asarray(out["actions"], np.float32)

    def close(self) -> None:
        self._conn.__exit__(None, None, None)

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def server_policy(url: str) -> RemotePolicy:
    """A RemotePolicy for an eval worker (picklable entry point: each worker holds its own connection)."""
    return RemotePolicy(url)
