"""Numpy rasteriser for the suite's two cameras: an oblique third-person view and a top-down wrist view.

Shapes are drawn upright (row 0 = top of the picture) as palette indices into a 224x224 uint8
label image: fills write one byte per pixel inside each shape's bounding box, starting from a
precomputed background. One palette gather per camera then yields the RGB image, read through a
180-degree flipped view so the output follows LIBERO's raw (OpenGL, upside-down) convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from omnimodel.suite.tasks import COLOURS, SHAPES

SIZE = 224
# Third-person camera: orthographic, elevated THETA above the table, looking along +y.
_S = 400.0  # pixels per metre
_THETA = math.radians(50.0)
_SIN, _COS = math.sin(_THETA), math.cos(_THETA)
_U0, _V0 = SIZE / 2.0, 118.0
# Wrist camera: pinhole looking straight down from CAM_UP above the gripper tip.
_F = 130.0  # focal length in pixels
CAM_UP = 0.08
TABLE_X, TABLE_Y = 0.34, 0.30  # table half extents (metres)

_TABLE = (196, 170, 128)
_FLOOR = (92, 96, 108)
# Fixed palette entries; objects use OBJ_BASE + 8 * index + shade.
FLOOR, TABLE, TABLE_EDGE, GRID, SHADOW, GRIPPER, ARM = range(7)
WALL_BASE = 8  # 8..31: wall gradient
OBJ_BASE = 64
SHADES = (1.0, 0.72, 0.8, 0.65, 0.95, 0.55, 0.9, 0.7)
LIT, SIDE, BALL, BOWL_BODY, RIM, INSIDE, WELL, PLATE_EDGE = range(8)
MAX_OBJECTS = (256 - OBJ_BASE) // len(SHADES)


def project(x: float, y: float, z: float) -> tuple[float, float]:
    """Third-person pixel coordinates (u, v) of a world point (upright image)."""
    return _U0 + _S * x, _V0 - _S * (_SIN * y + _COS * z)


def build_palette(colour_names: list[str]) -> np.ndarray:
    """(256, 3) uint8 palette: fixed scene colours plus eight shades of each object's colour."""
    if len(colour_names) > MAX_OBJECTS:
        raise ValueError(f"at most {MAX_OBJECTS} objects per scene")
    pal = np.zeros((256, 3), np.float32)
    pal[FLOOR], pal[TABLE] = _FLOOR, _TABLE
    pal[TABLE_EDGE] = np.array(_TABLE) * 0.7
    pal[GRID] = np.array(_TABLE) * 0.9
    pal[SHADOW] = np.array(_TABLE) * 0.55
    pal[GRIPPER], pal[ARM] = (70, 72, 78), (170, 172, 180)
    for k in range(24):
        pal[WALL_BASE + k] = np.array(_FLOOR) + (20 - k)
    for i, name in enumerate(colour_names):
        for s, f in enumerate(SHADES):
            pal[OBJ_BASE + 8 * i + s] = np.array(COLOURS[name], np.float32) * f
    return np.clip(pal, 0, 255).astype(np.uint8)


def _box(img: np.ndarray, u0: float, u1: float, v0: float, v1: float):
    """Integer clipped bounds of a box; None when empty."""
    a, b = max(int(round(min(u0, u1))), 0), min(int(round(max(u0, u1))), img.shape[1])
    c, d = max(int(round(min(v0, v1))), 0), min(int(round(max(v0, v1))), img.shape[0])
    if a >= b or c >= d:
        return None
    return a, b, c, d


def fill_rect(img: np.ndarray, u0: float, u1: float, v0: float, v1: float, label: int) -> None:
    """Fill an axis-aligned rectangle (pixel coordinates, clipped)."""
    bb = _box(img, u0, u1, v0, v1)
    if bb is not None:
        img[bb[2] : bb[3], bb[0] : bb[1]] = label


_MASKS: dict[tuple[int, int], np.ndarray] = {}


def _ellipse_mask(ru2: int, rv2: int) -> np.ndarray:
    """Boolean mask of an ellipse with semi-axes ru2/2, rv2/2 pixels centred in an odd-sized box (cached)."""
    mask = _MASKS.get((ru2, rv2))
    if mask is None:
        if len(_MASKS) > 8192:
            _MASKS.clear()
        ru, rv = max(ru2 / 2.0, 0.5), max(rv2 / 2.0, 0.5)
        hu, hv = int(math.ceil(ru)), int(math.ceil(rv))
        du = np.arange(-hu, hu + 1, dtype=np.float32) / ru
        dv = np.arange(-hv, hv + 1, dtype=np.float32) / rv
        mask = du[None, :] ** 2 + dv[:, None] ** 2 <= 1.0
        _MASKS[(ru2, rv2)] = mask
    return mask


def fill_ellipse(img: np.ndarray, cu: float, cv: float, ru: float, rv: float, label: int) -> None:
    """Fill an axis-aligned ellipse centred at (cu, cv) (snapped to a pixel) with semi-axes ru, rv (clipped)."""
    mask = _ellipse_mask(int(ru * 2 + 0.5), int(rv * 2 + 0.5))
    hv, hu = mask.shape[0] // 2, mask.shape[1] // 2
    ci, cj = int(math.floor(cv)), int(math.floor(cu))
    r0, c0 = ci - hv, cj - hu
    a, b = max(r0, 0), min(ci + hv + 1, img.shape[0])
    c, d = max(c0, 0), min(cj + hu + 1, img.shape[1])
    if a >= b or c >= d:
        return
    np.copyto(img[a:b, c:d], label, where=mask[a - r0 : b - r0, c - c0 : d - c0])


def fill_square(img: np.ndarray, cu: float, cv: float, half: float, angle: float, label: int) -> None:
    """Fill a square of half side `half` pixels rotated by `angle` radians about (cu, cv)."""
    if abs(math.sin(2 * angle)) < 1e-3:  # axis-aligned (the usual case once the expert has levelled yaw)
        fill_rect(img, cu - half, cu + half, cv - half, cv + half, label)
        return
    reach = half * 1.4143
    bb = _box(img, cu - reach, cu + reach + 1, cv - reach, cv + reach + 1)
    if bb is None:
        return
    a, b, c, d = bb
    du = np.arange(a, b, dtype=np.float32)[None, :] + 0.5 - cu
    dv = np.arange(c, d, dtype=np.float32)[:, None] + 0.5 - cv
    cs, sn = math.cos(angle), math.sin(angle)
    mask = (np.abs(du * cs + dv * sn) <= half) & (np.abs(-du * sn + dv * cs) <= half)
    np.copyto(img[c:d, a:b], label, where=mask)


def _agent_background() -> np.ndarray:
    img = np.empty((SIZE, SIZE), np.uint8)
    img[:] = (WALL_BASE + np.minimum(np.arange(SIZE) // 12, 23))[:, None]  # wall, darker downwards
    _, v_back = project(0, TABLE_Y, 0)
    _, v_front = project(0, -TABLE_Y, 0)
    u_l, _ = project(-TABLE_X, 0, 0)
    u_r, _ = project(TABLE_X, 0, 0)
    fill_rect(img, u_l, u_r, v_back, v_front, TABLE)
    fill_rect(img, u_l, u_r, v_front, v_front + 14, TABLE_EDGE)
    for g in np.arange(-0.3, 0.31, 0.1):  # faint 10 cm grid: helps judge position and depth
        u, _ = project(g, 0, 0)
        fill_rect(img, u - 0.5, u + 0.5, v_back, v_front, GRID)
        if abs(g) <= TABLE_Y:
            _, v = project(0, g, 0)
            fill_rect(img, u_l, u_r, v - 0.5, v + 0.5, GRID)
    return img


_AGENT_BG = _agent_background()
_COARSE = 4  # the wrist view's table edge is computed on a 56x56 grid and upsampled
_CPIX = (np.arange(SIZE // _COARSE, dtype=np.float32) + 0.5) * _COARSE - SIZE / 2.0


@dataclass
class SceneView:
    """What the renderer needs of the world state (metres / radians) plus the scene's palette."""

    shapes: list[str]
    palette: np.ndarray  # (256, 3) uint8 from build_palette
    pos: np.ndarray  # (N, 3) base centres
    level: np.ndarray  # (N,) stacking level: 0 on table/containers, 1 on a stackable, ...
    held: int
    tip: np.ndarray  # (3,)
    yaw: float
    width: float  # finger opening in metres


def _draw_order(view: SceneView) -> list[int]:
    group = {"plate": 0, "bowl": 1}
    keys = []
    for i, shape in enumerate(view.shapes):
        g = 3 if i == view.held else group.get(shape, 2)
        keys.append((g, -view.pos[i, 1] + 0.05 * view.level[i], i))
    return [k[2] for k in sorted(keys)]


def _agent_object(img: np.ndarray, shape: str, base: int, p: np.ndarray) -> None:
    half, h = SHAPES[shape]
    x, y, z = float(p[0]), float(p[1]), float(p[2])
    r = half * _S
    if shape == "cube":
        u, v_base = project(x, y - half, z)
        _, v_top_front = project(x, y - half, z + h)
        _, v_top_back = project(x, y + half, z + h)
        fill_rect(img, u - r, u + r, v_top_front, v_base, base + SIDE)
        fill_rect(img, u - r, u + r, v_top_back, v_top_front, base + LIT)
    elif shape == "cylinder":
        u, vb = project(x, y, z)
        _, vt = project(x, y, z + h)
        fill_ellipse(img, u, vb, r, r * _SIN, base + SIDE)
        fill_rect(img, u - r, u + r, vt, vb, base + SIDE)
        fill_ellipse(img, u, vt, r, r * _SIN, base + LIT)
    elif shape == "ball":
        u, v = project(x, y, z + half)
        fill_ellipse(img, u, v, r, r, base + BALL)
        fill_ellipse(img, u - 0.2 * r, v - 0.25 * r, 0.6 * r, 0.6 * r, base + LIT)
    elif shape == "bowl":
        u, vm = project(x, y, z + 0.5 * h)
        _, vt = project(x, y, z + h)
        fill_ellipse(img, u, vm, 0.85 * r, 0.5 * h * _COS * _S + 0.5 * r * _SIN, base + BOWL_BODY)
        fill_ellipse(img, u, vt, r, r * _SIN, base + RIM)
        fill_ellipse(img, u, vt, 0.8 * r, 0.8 * r * _SIN, base + INSIDE)
    elif shape == "plate":
        u, vb = project(x, y, z)
        _, vt = project(x, y, z + h)
        fill_ellipse(img, u, 0.5 * (vb + vt), r, r * _SIN + 0.5 * (vb - vt), base + PLATE_EDGE)
        fill_ellipse(img, u, vt, r, r * _SIN, base + LIT)
        fill_ellipse(img, u, vt, 0.65 * r, 0.65 * r * _SIN, base + WELL)


def _agent_gripper(img: np.ndarray, tip: np.ndarray, yaw: float, width: float) -> None:
    x, y, z = float(tip[0]), float(tip[1]), float(tip[2])
    spread = (0.5 * width + 0.006) * max(abs(math.cos(yaw)), 0.3) * _S
    u, v_tip = project(x, y, z)
    _, v_palm = project(x, y, z + 0.05)
    _, v_palm_top = project(x, y, z + 0.065)
    fw = 0.006 * _S
    fill_rect(img, u - 0.015 * _S, u + 0.015 * _S, -1, v_palm_top, ARM)
    fill_rect(img, u - spread - fw, u + spread + fw, v_palm_top, v_palm, GRIPPER)
    fill_rect(img, u - spread - fw, u - spread + fw, v_palm, v_tip, GRIPPER)
    fill_rect(img, u + spread - fw, u + spread + fw, v_palm, v_tip, GRIPPER)


def render_agentview(view: SceneView, labels: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Draw the third-person image into `out` (224x224x3, upside down like LIBERO's); `labels` is scratch."""
    labels[:] = _AGENT_BG
    u, v = project(float(view.tip[0]), float(view.tip[1]), 0.0)  # the gripper's shadow on the table
    fill_ellipse(labels, u, v, 0.02 * _S, 0.02 * _S * _SIN, SHADOW)
    for i in _draw_order(view):
        _agent_object(labels, view.shapes[i], OBJ_BASE + 8 * i, view.pos[i])
    _agent_gripper(labels, view.tip, view.yaw, view.width)
    np.take(view.palette, labels[::-1, ::-1], axis=0, out=out)
    return out


def _wrist_background(view: SceneView, labels: np.ndarray) -> None:
    """Table, with the floor where the camera sees past the table's edge (upright labels)."""
    cam_z = float(view.tip[2]) + CAM_UP
    reach = SIZE / 2.0 * cam_z / _F * 1.4143
    gx, gy = float(view.tip[0]), float(view.tip[1])
    labels[:] = TABLE
    if abs(gx) + reach <= TABLE_X and abs(gy) + reach <= TABLE_Y:
        return
    cs, sn = math.cos(view.yaw), math.sin(view.yaw)
    k = cam_z / _F
    cu, cv = _CPIX[None, :] * k, -_CPIX[:, None] * k  # camera-frame metres (right, forward)
    wx = gx + cu * cs - cv * sn
    wy = gy + cu * sn + cv * cs
    off = (np.abs(wx) > TABLE_X) | (np.abs(wy) > TABLE_Y)
    labels[:] = np.where(off, FLOOR, TABLE).astype(np.uint8).repeat(_COARSE, 0).repeat(_COARSE, 1)


def _wrist_object(img: np.ndarray, view: SceneView, i: int, cam: np.ndarray, cs: float, sn: float) -> None:
    shape, p, base = view.shapes[i], view.pos[i], OBJ_BASE + 8 * i
    half, h = SHAPES[shape]
    top = float(p[2]) + (h if shape != "bowl" else 0.25 * h)
    depth = max(float(cam[2]) - top, 0.02)
    dx, dy = float(p[0] - cam[0]), float(p[1] - cam[1])
    rx, ry = dx * cs + dy * sn, -dx * sn + dy * cs  # rotate into the camera frame
    k = _F / depth
    u, v = SIZE / 2.0 + rx * k, SIZE / 2.0 - ry * k
    r = half * k
    if shape == "cube":
        fill_square(img, u, v, r, view.yaw, base + LIT)
    elif shape == "bowl":
        fill_ellipse(img, u, v, r, r, base + RIM)
        fill_ellipse(img, u, v, 0.8 * r, 0.8 * r, base + INSIDE)
    elif shape == "plate":
        fill_ellipse(img, u, v, r, r, base + LIT)
        fill_ellipse(img, u, v, 0.65 * r, 0.65 * r, base + WELL)
    elif shape == "ball":
        fill_ellipse(img, u, v, r, r, base + BALL)
        fill_ellipse(img, u - 0.2 * r, v - 0.2 * r, 0.6 * r, 0.6 * r, base + LIT)
    else:  # cylinder
        fill_ellipse(img, u, v, r, r, base + LIT)


def render_wrist(view: SceneView, labels: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Draw the wrist (eye-in-hand) image into `out`, upside down like LIBERO's: a top-down view turning with the gripper."""
    _wrist_background(view, labels)
    cam = np.array([view.tip[0], view.tip[1], view.tip[2] + CAM_UP], np.float64)
    cs, sn = math.cos(view.yaw), math.sin(view.yaw)
    heights = view.pos[:, 2] + np.array([SHAPES[s][1] for s in view.shapes])
    for i in np.argsort(heights, kind="stable"):
        if i != view.held:
            _wrist_object(labels, view, int(i), cam, cs, sn)
    if view.held >= 0:
        _wrist_object(labels, view, view.held, cam, cs, sn)
    gap = (0.5 * view.width + 0.005) * _F / CAM_UP  # the two fingers, fixed in the image
    fw = 0.012 * _F / CAM_UP
    fill_rect(labels, SIZE / 2 - gap - fw, SIZE / 2 - gap, 150, SIZE, GRIPPER)
    fill_rect(labels, SIZE / 2 + gap, SIZE / 2 + gap + fw, 150, SIZE, GRIPPER)
    np.take(view.palette, labels[::-1, ::-1], axis=0, out=out)
    return out
