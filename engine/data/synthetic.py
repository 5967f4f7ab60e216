"""Built-in procedural face-like image set: the embedded default data (``synthetic:N``).

Every image is a pure function of ``(seed, index, size)``: it is drawn from its own
generator ``np.random.default_rng([seed, index])``, so any worker can render any
block of indices and the result does not depend on how the range was split.

Geometry is described in continuous coordinates, so an image looks the same (up
to resolution) at any ``size``:

* image coordinates ``x, y`` in ``[-1, 1]`` (pixel centres), ``x`` to the right,
  ``y`` downwards;
* face coordinates ``fx, fy``: the image coordinates translated to the face
  centre ``(cx, cy)``, rotated by the head tilt and divided by the head scale,
  so that the face oval has half-height 1 and half-width ``a`` (about 0.78).

Shapes are signed distance fields ``d`` (negative inside) turned into anti-aliased
coverage ``clip(0.5 - d / pw, 0, 1)`` with ``pw`` the pixel width in the same
units; layers are painted back to front with ``img += cov * (colour - img)``.
The layout imitates an aligned, centre-cropped frontal face photo (eyes at about
40% of the height, face filling most of the frame) because downstream stages run
OpenCV's Haar frontal-face detector on these images and on their reconstructions.

Planted attributes: ``render_attributes(start, stop, seed)`` gives the labels of
``render_block(start, stop, seed=seed)`` (hair colour, skin tone, face width, long
hair, a fringe, an open mouth; ``ATTRIBUTE_NAMES``) read from the same uniforms the
renderer draws, without rendering; ``prepare synthetic:N`` stores them beside the
images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ATTRIBUTE_NAMES", "planted_attributes", "render_attributes", "render_block", "render_face"]

_F = np.float32

# Palettes are (k, 3) float RGB in [0, 1]. Skin and iris take a random point between
# two neighbouring entries so that colours vary continuously, not in a few classes;
# hair picks a weighted entry and mixes it part-way towards dark brown.
_SKIN = np.array(
    [
        [0.98, 0.85, 0.76],
        [0.93, 0.76, 0.64],
        [0.85, 0.66, 0.52],
        [0.72, 0.52, 0.38],
        [0.55, 0.37, 0.25],
        [0.38, 0.25, 0.17],
    ],
    dtype=_F,
)
_HAIR = np.array(
    [
        [0.06, 0.05, 0.05],  # black
        [0.20, 0.12, 0.07],  # dark brown
        [0.40, 0.25, 0.13],  # brown
        [0.80, 0.64, 0.38],  # blond
        [0.58, 0.26, 0.10],  # auburn
        [0.62, 0.60, 0.58],  # grey
    ],
    dtype=_F,
)
# Cumulative probabilities of the hair colours above: dark hair is the most common.
_HAIR_CDF = np.cumsum([0.28, 0.25, 0.18, 0.14, 0.07])
_IRIS = np.array(
    [
        [0.30, 0.17, 0.08],
        [0.14, 0.09, 0.06],
        [0.25, 0.42, 0.62],
        [0.28, 0.42, 0.26],
        [0.42, 0.46, 0.50],
    ],
    dtype=_F,
)

_N_DRAWS = 128  # uniforms drawn per face; render_face consumes them in a fixed order

# Parameters of the draws that set the planted attributes, shared by render_face and
# render_attributes so that a label is the very value the renderer used.
_SKIN_POWER = 1.3  # skin palette position u ** 1.3: pale skin is the most common
_SHORT, _MEDIUM = 0.4, 0.7  # hair style u: short below 0.4, medium below 0.7, else long
_WIDTH = (0.70, 0.84)  # face half-width / half-height
_OPENED = (-0.06, 0.09)  # mouth opening in face units, clipped at 0 (closed)
_FRINGE = 0.35  # share of faces with a fringe (bangs) over the forehead

# Slot (position in the stream of uniforms) of each planted draw. Every draw before
# the fringe is unconditional, so these slots are the same for every face;
# render_face checks each one as it draws.
_SLOTS = {"skin": 11, "hair": 15, "width": 27, "style": 28, "opened": 71, "fringe": 75}

# The planted attributes: CelebA's names where one fits. Each is common enough both ways
# to train and test a readout on a few hundred faces, and large enough in the image for
# the attribute classifier (engine.model.classifier, 2,200 training faces) to learn it:
# hair colour, skin, long hair at held-out AUC 0.98-1.0 from 32 px, a fringe and face
# width 0.72-0.86, an open mouth 0.94 at 64 px after 20 epochs (near chance at 32 px).
# Smile and head tilt are not labels: a corner lift of at most 4 px at 96 px and a tilt
# of a few degrees stayed at chance AUC at 96 px.
ATTRIBUTE_NAMES = ["Black_Hair", "Brown_Hair", "Blond_Hair", "Pale_Skin", "Dark_Skin", "Wide_Face", "Long_Hair",
                   "Bangs", "Mouth_Slightly_Open"]
_PALE, _DARK = 0.2, 0.6  # skin palette position: below 0.2 the two palest entries; above 0.6 the two darkest
_WIDE = 0.77  # face half-width / half-height above the middle of its range
# an opening above half the widest (0.09): the narrower ones, teeth or not, are a few
# pixels that the classifier did not tell from a closed mouth
_OPEN = 0.045

_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _between(lo: float, hi: float, v: float) -> float:
    """The uniform ``v`` in [0, 1) mapped to [lo, hi): every draw of render_face goes through here."""
    return lo + (hi - lo) * v


def _hair_class(v: float) -> int:
    """Index into ``_HAIR`` of the uniform ``v``: the colour with cumulative probability just above it."""
    return int(np.searchsorted(_HAIR_CDF, v, side="right"))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, each float32 (size, size) in [-1, 1]."""
    g = _GRIDS.get(size)
    if g is None:
        t = ((np.arange(size, dtype=_F) + _F(0.5)) * _F(2.0 / size) - _F(1.0)).astype(_F)
        y, x = np.meshgrid(t, t, indexing="ij")
        g = (x, y)
        # Cached per size; a handful of sizes are ever used in one process.
        _GRIDS[size] = g
    return g


def _cov(d: np.ndarray, inv_pw: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the region ``d < 0``; ``inv_pw`` = 1 / pixel width."""
    c = _F(0.5) - d * _F(inv_pw)
    np.clip(c, 0.0, 1.0, out=c)
    return c


def _ellipse(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to the ellipse ``(x/a)^2 + (y/b)^2 = 1``.

    ``k (k - 1) / |grad k|`` with ``k = sqrt((x/a)^2 + (y/b)^2)``: exact on the
    curve (which is all anti-aliasing needs) and smooth elsewhere.
    """
    xa = x * _F(1.0 / a)
    yb = y * _F(1.0 / b)
    k = np.sqrt(xa * xa + yb * yb)
    gx = xa * _F(1.0 / a)
    gy = yb * _F(1.0 / b)
    g = np.sqrt(gx * gx + gy * gy)
    g += _F(1e-6)
    return k * (k - _F(1.0)) / g


def _over(img: np.ndarray, cov: np.ndarray, colour: np.ndarray) -> None:
    """Paint ``colour`` ((3,) or (H, W, 3)) over ``img`` (H, W, 3) in place with coverage (H, W)."""
    img += cov[..., None] * (colour - img)


def _lerp_palette(pal: np.ndarray, t: float) -> np.ndarray:
    """Colour at position ``t`` in [0, 1] along palette ``pal`` (k, 3): float32 (3,)."""
    p = t * (len(pal) - 1)
    i = min(int(p), len(pal) - 2)
    f = p - i
    return (pal[i] * (1.0 - f) + pal[i + 1] * f).astype(_F)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1]^3 to float32 RGB (3,)."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(_F)


def _check(name: str, value: int, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def render_face(index: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 (size, size, 3) RGB image number `index` of the synthetic set `seed`; a pure function of (seed, index, size).

    ``index >= 0``, ``seed >= 0``, ``size >= 8``. All parameters (background, skin,
    hair style and colour, eyes, brows, nose, mouth, head scale, tilt, offset,
    lighting, noise) come from ``np.random.default_rng([seed, index])``; only the
    pixel noise depends on ``size``, so the same index at two sizes shows the same
    face.
    """
    index = _check("index", index, 0)
    size = _check("size", size, 8)
    seed = _check("seed", seed, 0)
    rng = np.random.default_rng([seed, index])
    # One batch of uniforms: a Generator call per parameter would cost more than
    # the drawing itself at 96 px. Slots are consumed in a fixed order.
    draws = rng.random(_N_DRAWS).tolist()
    pos = 0

    def U(lo: float, hi: float) -> float:
        nonlocal pos
        pos += 1
        return _between(lo, hi, draws[pos - 1])

    def P(name: str, lo: float, hi: float) -> float:
        # a planted draw: render_attributes reads this slot without rendering, so a
        # renderer change that moves it must fail loudly here, not mislabel faces
        if pos != _SLOTS[name]:
            raise RuntimeError(f"planted draw {name!r} moved from slot {_SLOTS[name]} to {pos}: update _SLOTS")
        return U(lo, hi)

    x, y = _grid(size)
    half = size * 0.5

    # ---- head pose -------------------------------------------------------
    tilt = np.deg2rad((U(0, 1) + U(0, 1) - 1.0) * 15.0)  # triangular in +-15 deg
    scale = U(0.58, 0.72)  # face half-height in image units
    cx = U(-0.06, 0.06)
    cy = U(0.0, 0.09)
    c, s = float(np.cos(tilt)), float(np.sin(tilt))
    dx = x - _F(cx)
    dy = y - _F(cy)
    fx = (dx * _F(c) + dy * _F(s)) * _F(1.0 / scale)
    fy = (dy * _F(c) - dx * _F(s)) * _F(1.0 / scale)
    ax = np.abs(fx)  # mirrored coordinate: one evaluation draws both eyes, brows, ears
    sgn = np.sign(fx)
    ipw = scale * half  # 1 / pixel width in face units

    def box(x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        # Pixel window covering a face-space rectangle: features are evaluated only
        # there, which is most of the speed-up over full-frame evaluation.
        cols, rows = [], []
        for px, py in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
            cols.append((cx + scale * (c * px - s * py) + 1.0) * half - 0.5)
            rows.append((cy + scale * (s * px + c * py) + 1.0) * half - 0.5)
        r0 = min(max(int(np.floor(min(rows))) - 1, 0), size)
        r1 = min(max(int(np.ceil(max(rows))) + 2, r0), size)
        c0 = min(max(int(np.floor(min(cols))) - 1, 0), size)
        c1 = min(max(int(np.ceil(max(cols))) + 2, c0), size)
        return (slice(r0, r1), slice(c0, c1))

    # ---- colours ---------------------------------------------------------
    bg0 = _hsv(U(0, 1), U(0.05, 0.45), U(0.35, 0.92))
    bg1 = _hsv(U(0, 1), U(0.05, 0.45), U(0.35, 0.92))
    skin = _lerp_palette(_SKIN, P("skin", 0, 1) ** _SKIN_POWER) * _F(U(0.94, 1.06))
    skin = skin * np.array([U(0.97, 1.03), 1.0, U(0.95, 1.05)], dtype=_F)
    hi = _hair_class(P("hair", 0, 1))
    hair = (_HAIR[hi] + (_HAIR[1] - _HAIR[hi]) * _F(U(0.0, 0.3))) * _F(U(0.85, 1.15))
    iris = _lerp_palette(_IRIS, U(0, 1))
    clothes = _hsv(U(0, 1), U(0.1, 0.7), U(0.15, 0.85))
    lip_red = U(0.0, 1.0) ** 3  # mostly natural lips, sometimes lipstick
    blush = U(0.0, 0.12)

    # ---- background: two colours mixed by a soft linear gradient -----------
    ga = U(0, 2 * np.pi)
    t = (x * _F(np.cos(ga)) + y * _F(np.sin(ga))) * _F(0.5) + _F(0.5)
    img = bg0 + t[..., None] * (bg1 - bg0)

    # ---- lighting: directional gradient + a ball-like falloff at the rim ---
    la = U(0, 2 * np.pi)
    lk = U(0.05, 0.35)
    a = P("width", *_WIDTH)  # face half-width / half-height
    shade = _F(1.0) + _F(lk * np.cos(la)) * fx + _F(lk * np.sin(la) * 0.6) * fy
    rr = fx * fx * _F(1.0 / (a * a)) + fy * fy
    shade -= _F(0.11) * rr * rr
    shade3 = shade[..., None]
    skin_lit = skin * shade3

    # ---- hair behind the head ---------------------------------------------
    style = P("style", 0, 1)
    if style < _SHORT:  # short: stops above the ears
        vol, hair_len, side = U(0.03, 0.14), U(-0.5, -0.25), U(0.05, 0.3)
    elif style < _MEDIUM:  # medium: bob between ear and chin
        vol, hair_len, side = U(0.06, 0.24), U(0.0, 0.75), U(0.3, 0.9)
    else:  # long: past the chin, sometimes onto the shoulders
        vol, hair_len, side = U(0.06, 0.26), U(0.8, 1.9), U(0.4, 1.3)
    hair_ry = 1.0 + vol
    hair_rx = a + 0.08 + vol
    hcy = -0.12
    wide = hair_rx * U(0.92, 1.08)
    hb = max(hair_len, 0.05)
    wh = box(-max(hair_rx, wide), max(hair_rx, wide), hcy - hair_ry, max(hb, hcy + hair_ry))
    hx, hy, hax = fx[wh], fy[wh], ax[wh]
    d_hair = _ellipse(hx, hy - _F(hcy), hair_rx, hair_ry)
    if hair_len > 0.3:
        # long hair: a slab from the temples down to hair_len, rounded at the bottom
        rc = 0.25
        qx = hax - _F(wide - rc)
        qy = np.abs(hy - _F(hair_len * 0.5)) - _F(hair_len * 0.5 - rc)
        slab = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
        slab += np.minimum(np.maximum(qx, qy), 0.0) - _F(rc)
        d_hair = np.minimum(d_hair, slab)
    d_hair = np.maximum(d_hair, hy - _F(hb))
    # Strands: two incommensurate ripples keep hair from reading as a flat blob.
    # Each ripple fades out where its wavelength nears 2 px, which would alias.
    f1 = U(35, 60)
    f2 = f1 * 1.618
    amp1 = 0.03 * min(max((2 * np.pi / f1 * ipw - 2.0) * 0.5, 0.0), 1.0)
    amp2 = 0.03 * min(max((2 * np.pi / f2 * ipw - 2.0) * 0.5, 0.0), 1.0)
    streak = np.sin(hx * _F(f1) + hy * _F(U(-5, 5)) + _F(U(0, 6.3))) * _F(amp1)
    streak += np.sin(hx * _F(f2) + hy * hy * _F(U(-8, 8)) + _F(U(0, 6.3))) * _F(amp2)
    streak += _F(1.0)
    hair_col = hair * ((shade3[wh] * _F(0.6) + _F(0.4)) * streak[..., None])
    _over(img[wh], _cov(d_hair, ipw), hair_col)

    # ---- neck and shoulders ----------------------------------------------
    neck_w = a * U(0.42, 0.55)
    w = box(-neck_w, neck_w, 0.3, 4.0)
    d_neck = np.maximum(ax[w] - _F(neck_w), _F(0.3) - fy[w])
    _over(img[w], _cov(d_neck, ipw), skin_lit[w] * _F(0.78))
    sh_y, sh_rx, sh_ry = U(1.75, 2.05), a * U(2.2, 2.8), U(0.6, 0.8)
    w = box(-sh_rx, sh_rx, sh_y - sh_ry, sh_y + sh_ry)
    _over(img[w], _cov(_ellipse(fx[w], fy[w] - _F(sh_y), sh_rx, sh_ry), ipw), clothes)

    # ---- ears (long hair covers them later) ---------------------------------
    ear_y, ear_rx, ear_ry = -U(0.02, 0.12), U(0.08, 0.13), U(0.17, 0.24)
    w = box(-a - ear_rx, a + ear_rx, ear_y - ear_ry, ear_y + ear_ry)
    d_ear = _ellipse(ax[w] - _F(a), fy[w] - _F(ear_y), ear_rx, ear_ry)
    _over(img[w], _cov(d_ear, ipw), skin_lit[w] * _F(0.9))

    # ---- face oval, narrowing towards the chin ----------------------------
    taper = U(0.08, 0.28)
    wf = box(-a - 0.03, a + 0.03, -1.03, 1.03)
    X, Y, AX = fx[wf], fy[wf], ax[wf]
    im = img[wf]
    yc = np.clip(Y, 0.0, 1.2)
    a_eff = _F(a) * (_F(1.0) - _F(taper) * yc * yc)
    xa = X / a_eff
    d_face = (np.sqrt(xa * xa + Y * Y) - _F(1.0)) * _F(a)
    face_cov = _cov(d_face, ipw)
    _over(im, face_cov, skin_lit[wf])

    # ---- soft shading on the skin (multiplicative) --------------------------
    ey = U(-0.38, -0.24)  # eye centre height, face units
    ex = a * U(0.38, 0.50)
    ny = U(0.08, 0.22)  # nose tip
    my = ny + U(0.22, 0.34)  # mouth centre line
    # eye sockets: real photos are darkest here, and the Haar features key on it
    g = (AX - _F(ex)) ** 2 * _F(-1.0 / 0.045) - (Y - _F(ey - 0.02)) ** 2 * _F(1.0 / 0.02)
    mul = np.exp(g) * _F(-U(0.12, 0.28))
    # nose: shadowed flank on the side away from the light, shadow under the tip
    nside = -1.0 if np.cos(la) > 0 else 1.0
    flank = np.exp((X - _F(nside * 0.075)) ** 2 * _F(-1.0 / 0.0012))
    flank *= np.clip((Y - _F(ey + 0.08)) * _F(6.0), 0.0, 1.0)
    flank *= np.clip((_F(ny + 0.02) - Y) * _F(15.0), 0.0, 1.0)
    mul -= _F(U(0.08, 0.2)) * flank
    x2 = X * X
    mul -= _F(U(0.12, 0.25)) * np.exp(x2 * _F(-1.0 / 0.01) - (Y - _F(ny + 0.05)) ** 2 * _F(1.0 / 0.0009))
    mul -= _F(0.08) * np.exp(x2 * _F(-1.0 / 0.02) - (Y - _F(my + 0.13)) ** 2 * _F(1.0 / 0.002))
    mul *= face_cov
    mul += _F(1.0)
    im *= mul[..., None]
    if blush > 0.02:
        ck = np.exp((AX - _F(a * 0.55)) ** 2 * _F(-1.0 / 0.02) - (Y - _F(ny)) ** 2 * _F(1.0 / 0.02))
        _over(im, ck * face_cov * _F(blush * 2.0), np.array([0.85, 0.35, 0.35], dtype=_F))

    # nostrils
    nsx = U(0.04, 0.07)
    w = box(-nsx - 0.04, nsx + 0.04, ny, ny + 0.05)
    d_nos = _ellipse(ax[w] - _F(nsx), fy[w] - _F(ny + 0.025), 0.028, 0.014)
    _over(img[w], _cov(d_nos, ipw) * _F(0.6), skin * _F(0.35))

    # ---- eyes ---------------------------------------------------------------
    ew = U(0.11, 0.16)
    eh = ew * U(0.35, 0.6)
    etilt = U(-0.25, 0.25)  # outer corner up (>0) or down
    gaze = U(-0.3, 0.3) * ew
    w = box(-ex - ew - 0.04, ex + ew + 0.04, ey - eh - 0.09, ey + eh + 0.07)
    im, sg = img[w], sgn[w]
    ex_l = ax[w] - _F(ex)
    ey_l = fy[w] - _F(ey) + _F(etilt) * ex_l
    d_eye = _ellipse(ex_l, ey_l, ew, eh)
    eye_cov = _cov(d_eye, ipw)
    white = np.array([0.93, 0.92, 0.9], dtype=_F) * _F(U(0.85, 1.0))
    _over(im, eye_cov, white * shade3[w])
    ir = min(eh * U(0.95, 1.35), ew * 0.62)
    ix = ex_l - _F(gaze) * sg  # same gaze direction for both (mirrored) eyes
    r_i = np.sqrt(ix * ix + ey_l * ey_l)
    _over(im, _cov(r_i - _F(ir), ipw) * eye_cov, iris)
    _over(im, _cov(r_i - _F(ir * 0.45), ipw) * eye_cov, _F(0.03))
    gx = ix + _F(ir * 0.35) * sg
    gy = ey_l + _F(ir * 0.35)
    glint = np.sqrt(gx * gx + gy * gy) - _F(ir * 0.22)
    _over(im, _cov(glint, ipw) * eye_cov * _F(0.85), _F(1.0))
    # upper lid and lashes: a dark stroke along the top half of the eye outline
    lid_w = U(0.012, 0.028)
    d_lid = np.maximum(np.abs(d_eye + _F(lid_w * 0.3)) - _F(lid_w), ey_l)
    _over(im, _cov(d_lid, ipw), hair * _F(0.4) + _F(0.02))

    # ---- eyebrows -------------------------------------------------------------
    bx = ex + U(-0.02, 0.04)
    by = ey - U(0.14, 0.22)
    bw = U(0.11, 0.18)
    bt = U(0.016, 0.042)
    arch = U(0.0, 4.0)
    slant = U(-0.3, 0.25)
    w = box(-bx - bw - 0.02, bx + bw + 0.02, by - bt - abs(slant) * bw - 0.02,
            by + arch * bw * bw + abs(slant) * bw + bt + 0.02)
    bdx = ax[w] - _F(bx)
    byc = _F(by) + _F(arch) * bdx * bdx + _F(slant) * bdx
    t_eff = _F(bt) * (_F(1.0) - _F(0.45) * np.clip((bdx + _F(bw)) * _F(0.5 / bw), 0.0, 1.0))
    d_brow = np.maximum(np.abs(fy[w] - byc) - t_eff, np.abs(bdx) - _F(bw))
    brow_col = hair * _F(U(0.45, 0.75)) + _F(0.02)
    _over(img[w], _cov(d_brow, ipw) * _F(U(0.75, 1.0)), brow_col)

    # ---- mouth: lips, then the opening (a single dark line when closed) -----
    mw = U(0.16, 0.28)
    smile = U(-0.05, 0.12)
    opened = max(P("opened", *_OPENED), 0.0)
    lt = U(0.015, 0.04)
    lb = U(0.025, 0.055)
    w = box(-mw - 0.02, mw + 0.02, my - max(smile, 0.0) - opened - lt - 0.02,
            my - min(smile, 0.0) + opened + lb + 0.02)
    im, MX = img[w], fx[w]
    xn2 = np.minimum((MX * _F(1.0 / mw)) ** 2, _F(1.0))
    q = np.sqrt(_F(1.0) - xn2)
    mdy = fy[w] - (_F(my) - _F(smile) * xn2)
    h_in = _F(opened) * q
    d_lip = np.where(mdy < 0, -mdy - h_in - _F(lt) * q, mdy - h_in - _F(lb) * q)
    max_x = ax[w] - _F(mw)
    d_lip = np.maximum(d_lip, max_x)
    lip = skin * _F(0.78 * (1.0 - lip_red)) + np.array([0.62, 0.12, 0.18], dtype=_F) * _F(lip_red)
    lip = lip + np.array([0.05, -0.03, -0.02], dtype=_F)
    _over(im, _cov(d_lip, ipw), lip * shade3[w])
    d_in = np.maximum(np.abs(mdy) - h_in - _F(0.006), max_x + _F(mw * 0.03))
    _over(im, _cov(d_in, ipw), np.array([0.22, 0.06, 0.07], dtype=_F))
    if opened > 0.02:
        d_teeth = np.maximum(d_in, mdy + h_in * _F(0.25))
        _over(im, _cov(d_teeth, ipw), np.array([0.9, 0.88, 0.82], dtype=_F) * shade3[w])

    # ---- hair in front: cap, fringe and side locks over the face -------------
    h0 = U(-1.0, -0.55)  # hairline height in the middle of the forehead
    fringe = P("fringe", 0.0, 1.0) < _FRINGE
    if fringe:
        h0 = min(by - bt - 0.06, h0 + U(0.2, 0.45))
    sw = U(0.55, 0.85)  # where, across the forehead, the sides start to drop
    part = U(-0.4, 0.4) * a
    ramp = np.clip((hax * _F(1.0 / a) - _F(sw)) * _F(1.0 / (0.95 - sw)), 0.0, 1.0)
    hairline = _F(h0) + _F(U(0.1, 0.4)) * hx * hx + _F(side) * ramp * ramp
    hairline -= _F(U(0.0, 0.12)) * np.exp((hx - _F(part)) ** 2 * _F(-1.0 / 0.003))
    if fringe:
        hairline += _F(U(0.0, 0.05)) * np.cos(hx * _F(U(20, 45)) + _F(U(0, 6.3)))
    d_front = np.maximum(hy - hairline, d_hair)
    d_front = np.maximum(d_front, _ellipse(hx, hy - _F(hcy), hair_rx + 0.05, hair_ry + 0.05))
    _over(img[wh], _cov(d_front, ipw), hair_col)

    # ---- exposure and sensor noise ------------------------------------------
    sigma = U(0.008, 0.03)
    img *= _F(255.0 * U(0.8, 1.15))
    # uniform noise from raw bytes: a quarter of the cost of standard_normal
    noise = np.frombuffer(rng.bytes(size * size * 3), dtype=np.int8).reshape(size, size, 3)
    img += noise * _F(255.0 * sigma * 3.46 / 256.0)
    np.clip(img, 0.0, 255.0, out=img)
    return np.rint(img).astype(np.uint8)


def render_block(start: int, stop: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 (stop-start, size, size, 3), rows equal render_face(i) for i in range(start, stop)."""
    start = _check("start", start, 0)
    stop = _check("stop", stop, start)
    size = _check("size", size, 8)
    out = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    for k, i in enumerate(range(start, stop)):
        out[k] = render_face(i, size=size, seed=seed)
    return out


def planted_attributes(index, seed: int = 0) -> np.ndarray:
    """int8 (n, len(ATTRIBUTE_NAMES)), 1 where image ``index[k]`` of the set ``seed`` shows the attribute, else 0.

    Read from the same uniforms render_face draws (``_SLOTS``), without rendering:
    about 10 us per face. ``index`` is a sequence of ints >= 0.
    """
    seed = _check("seed", seed, 0)
    index = [_check("index", i, 0) for i in np.asarray(index, dtype=object).ravel()]
    u = np.empty((len(index), _N_DRAWS))
    for k, i in enumerate(index):
        u[k] = np.random.default_rng([seed, i]).random(_N_DRAWS)
    col = {name: u[:, slot] for name, slot in _SLOTS.items()}
    skin = col["skin"] ** _SKIN_POWER
    hair = np.searchsorted(_HAIR_CDF, col["hair"], side="right")
    opened = np.maximum(_between(*_OPENED, col["opened"]), 0.0)
    planted = {
        "Black_Hair": hair == 0,
        "Brown_Hair": (hair == 1) | (hair == 2),  # dark brown or brown
        "Blond_Hair": hair == 3,
        "Pale_Skin": skin < _PALE,
        "Dark_Skin": skin > _DARK,
        "Wide_Face": _between(*_WIDTH, col["width"]) > _WIDE,
        "Long_Hair": col["style"] >= _MEDIUM,  # past the chin
        "Bangs": col["fringe"] < _FRINGE,
        "Mouth_Slightly_Open": opened > _OPEN,  # wide enough to show teeth clearly
    }
    return np.stack([planted[name] for name in ATTRIBUTE_NAMES], axis=1).astype(np.int8).reshape(len(index), -1)


def render_attributes(start: int, stop: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(names, int8 (stop-start, A) of 1/0): the attributes planted in render_block(start, stop, seed=seed).

    Names follow CelebA's where one fits (``Black_Hair``, ``Brown_Hair`` (dark brown or
    brown), ``Blond_Hair``, ``Pale_Skin`` (skin palette position below 0.2), ``Bangs``,
    ``Mouth_Slightly_Open`` (an opening above 0.045 face units)); the others are
    ``Dark_Skin`` (palette position above 0.6), ``Wide_Face`` (width / height above
    0.77) and ``Long_Hair`` (hair past the chin). Grey and auburn hair (8% and 7% of
    faces) are too rare to be labels of their own.
    """
    start = _check("start", start, 0)
    stop = _check("stop", stop, start)
    return list(ATTRIBUTE_NAMES), planted_attributes(range(start, stop), seed=seed)
