// zspace explore: fills the Bokeh plots from data.js, switches layouts and colours, shows each point's face on
// hover, and decodes z-points in the page (paths, mean faces) with a port of the run's decoder (decoder.js).
// Everything loads from this folder by <script> and <img>: the page works from disk, with no server.
(function () {
  "use strict";
  const D = window.ZSPACE_DATA, DEC = window.ZSPACE_DECODER, M = D.meta;
  const CATEGORICAL = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const PATH_STEPS = 8, SHOWN_NEIGHBOURS = 12;
  // a second map doubles every frame's drawing: beside the data only when the page is small, else on request
  const NULL_SHOWN_UP_TO = 50000;
  const $ = (id) => document.getElementById(id);

  // ---- arrays: base64 of little-endian typed arrays ----
  function bytes(b64) {
    const bin = atob(b64), u8 = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    return u8.buffer;
  }
  const HALF = (function () {  // float16 bit pattern -> float32
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      t[h] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
    }
    return t;
  })();
  function arr(a) {
    if (a == null) return null;
    const buf = bytes(a.b64);
    switch (a.dtype) {
      case "f4": return new Float32Array(buf);
      case "i4": return new Int32Array(buf);
      case "i1": return new Int8Array(buf);
      case "u2": return new Uint16Array(buf);
      case "f2": { const u = new Uint16Array(buf), out = new Float32Array(u.length);
        for (let i = 0; i < u.length; i++) out[i] = HALF[u[i]]; return out; }
    }
    throw new Error("unknown dtype " + a.dtype);
  }
  function column(a2d, ncol, j) {  // column j of a row-major (n, ncol) array
    const n = a2d.length / ncol, out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = a2d[i * ncol + j];
    return out;
  }

  // ---- seeded normal draws for the null model on the PCA and dominant planes ----
  function mulberry32(seed) {
    return function () {
      seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function normals(n, seed) {  // Box-Muller
    const r = mulberry32(seed), out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u = 1 - r(), v = r(), m = Math.sqrt(-2 * Math.log(u));
      out[i] = m * Math.cos(2 * Math.PI * v);
      if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
    }
    return out;
  }

  // ---- the decoder: dense layer, transposed convolutions (batch norm folded in), activations; HWC layout ----
  const decoder = DEC && (function () {
    const dw = arr(DEC.dense_w), db = arr(DEC.dense_b);
    const layers = DEC.layers.map((l) => ({ ...l, w: arr(l.w), b: arr(l.b) }));
    return { dw, db, layers };
  })();
  function decode(z) {  // z: Float32Array (z_dim) -> Float32Array (size * size * 3) in [0, 1], HWC
    const D0 = DEC.z_dim, side = DEC.side, C = DEC.channels, leak = DEC.leak;
    let H = side, W = side, cin = C, h = new Float32Array(side * side * C);
    for (let f = 0; f < side * side * C; f++) {  // dense output is (c, y, x); stored here as (y, x, c)
      let s = decoder.db[f];
      const row = f * D0;
      for (let d = 0; d < D0; d++) s += decoder.dw[row + d] * z[d];
      const c = Math.floor(f / (side * side)), p = f % (side * side);
      h[p * C + c] = s;
    }
    for (const L of decoder.layers) {
      const k = L.k, s = L.stride, pad = L.pad, cout = L.cout, Ho = H * s, Wo = W * s;
      const out = new Float32Array(Ho * Wo * cout);
      for (let p = 0; p < Ho * Wo; p++) out.set(L.b, p * cout);
      for (let iy = 0; iy < H; iy++) for (let ix = 0; ix < W; ix++) {
        const ibase = (iy * W + ix) * cin;
        for (let ci = 0; ci < cin; ci++) {
          const v = h[ibase + ci];
          if (v === 0) continue;
          for (let ky = 0; ky < k; ky++) {
            const oy = iy * s - pad + ky;
            if (oy < 0 || oy >= Ho) continue;
            for (let kx = 0; kx < k; kx++) {
              const ox = ix * s - pad + kx;
              if (ox < 0 || ox >= Wo) continue;
              const wb = ((ci * k + ky) * k + kx) * cout, ob = (oy * Wo + ox) * cout;
              for (let co = 0; co < cout; co++) out[ob + co] += v * L.w[wb + co];
            }
          }
        }
      }
      if (L.act === "leaky") { for (let i = 0; i < out.length; i++) if (out[i] < 0) out[i] *= leak; }
      else { for (let i = 0; i < out.length; i++) out[i] = 1 / (1 + Math.exp(-out[i])); }
      h = out; H = Ho; W = Wo; cin = cout;
    }
    return h;
  }
  function drawDecoded(canvas, img) {  // img: HWC floats in [0, 1]
    const S = DEC.size, ctx = canvas.getContext("2d"), im = ctx.createImageData(S, S);
    for (let p = 0; p < S * S; p++) {
      for (let c = 0; c < 3; c++) im.data[p * 4 + c] = Math.round(img[p * 3 + c] * 255);
      im.data[p * 4 + 3] = 255;
    }
    canvas.width = S; canvas.height = S;
    ctx.putImageData(im, 0, 0);
  }

  // ---- latents and neighbours, one script per chunk, loaded on demand ----
  const chunks = new Map(), pending = new Map();
  const CHUNK = M.chunk;
  function chunk(c, z, nb) {
    const zz = arr(z), nn = arr(nb);
    chunks.set(c, { z: zz, nb: nn, k: nb.shape[1] });
    const p = pending.get(c);
    if (p) { p.resolve(); pending.delete(c); }
  }
  function loadChunk(c) {
    if (chunks.has(c)) return Promise.resolve();
    if (pending.has(c)) return pending.get(c).promise;
    let resolve, reject;
    const promise = new Promise((a, b) => { resolve = a; reject = b; });
    pending.set(c, { promise, resolve, reject });
    const s = document.createElement("script");
    s.src = "z/z_" + String(c).padStart(4, "0") + ".js";
    s.onerror = () => { reject(new Error("could not load " + s.src)); pending.delete(c); };
    document.head.appendChild(s);
    return promise;
  }
  async function latents(indices) {  // page positions -> array of Float32Array (z_dim)
    const need = [...new Set(indices.map((i) => Math.floor(i / CHUNK)))];
    await Promise.all(need.map(loadChunk));
    const d = M.d;
    return indices.map((i) => { const ch = chunks.get(Math.floor(i / CHUNK)), r = i % CHUNK;
      return ch.z.subarray(r * d, (r + 1) * d); });
  }
  async function neighbours(i) {
    await loadChunk(Math.floor(i / CHUNK));
    const ch = chunks.get(Math.floor(i / CHUNK)), r = i % CHUNK;
    return Array.from(ch.nb.subarray(r * ch.k, (r + 1) * ch.k)).filter((j) => j >= 0 && j !== i);
  }

  // ---- the page's data ----
  const N = M.n, ids = D.ids;
  const layouts = {};
  const L = {};
  for (const [k, v] of Object.entries(D.layouts)) L[k] = { data: arr(v), cols: v.shape[1] };
  const colours = D.colours.map((c) => ({ ...c, values: arr(c.values) }));
  const byName = Object.fromEntries(colours.map((c) => [c.name, c]));
  const labels = arr(D.labels), A = D.attributes.length;
  const allShares = D.attributes.map((_, j) => {  // each attribute's share among every labelled point
    let pos = 0, lab = 0;
    for (let i = 0; i < N; i++) { const v = labels[i * A + j]; if (v >= 0) { lab++; pos += v; } }
    return lab ? (100 * pos / lab).toFixed(1) + "%" : "-";
  });
  const probes = Object.fromEntries(Object.entries(D.probes).map(([k, v]) => [k, { data: arr(v), cols: v.shape[1] || 1 }]));
  const nullN = M.null_n, g1 = normals(nullN, M.seed * 2 + 1), g2 = normals(nullN, M.seed * 2 + 2);
  if (L.tsne) layouts.tsne = { label: "t-SNE map", pcs: false };
  layouts.pca = { label: "PCA plane", pcs: true };
  layouts.dominant = { label: `dominant components z[${M.dominant[0]}] x z[${M.dominant[1]}]`, pcs: false };

  function coords(name, i, j) {  // {x, y, nx, ny, px, py}: data, null and probe coordinates of a layout
    if (name === "tsne") {
      const nl = L.tsne_null;
      return { x: column(L.tsne.data, 2, 0), y: column(L.tsne.data, 2, 1),
               nx: nl ? column(nl.data, 2, 0) : new Float32Array(0), ny: nl ? column(nl.data, 2, 1) : new Float32Array(0),
               px: null, py: null };
    }
    if (name === "pca") {
      const v = M.pca_variance, nx = new Float32Array(nullN), ny = new Float32Array(nullN);
      const sx = Math.sqrt(v[i]), sy = Math.sqrt(v[j]);
      for (let t = 0; t < nullN; t++) { nx[t] = sx * g1[t]; ny[t] = sy * g2[t]; }
      const P = probes.pca;
      return { x: column(L.pca.data, L.pca.cols, i), y: column(L.pca.data, L.pca.cols, j), nx, ny,
               px: P ? column(P.data, P.cols, i) : null, py: P ? column(P.data, P.cols, j) : null };
    }
    // dominant: the fitted normal's 2 x 2 marginal, drawn through its Cholesky factor
    const m = M.dominant_mean, c = M.dominant_cov, a = Math.sqrt(c[0][0]), b = c[1][0] / a,
          e = Math.sqrt(Math.max(c[1][1] - b * b, 0));
    const nx = new Float32Array(nullN), ny = new Float32Array(nullN);
    for (let t = 0; t < nullN; t++) { nx[t] = m[0] + a * g1[t]; ny[t] = m[1] + b * g1[t] + e * g2[t]; }
    const P = probes.dominant;
    return { x: column(L.dominant.data, 2, 0), y: column(L.dominant.data, 2, 1), nx, ny,
             px: P ? column(P.data, 2, 0) : null, py: P ? column(P.data, 2, 1) : null };
  }

  // ---- the plots' backend. Bokeh's WebGL where WebGL runs on a GPU. The 2D canvas where it runs in software
  // (SwiftShader, llvmpipe, WARP: a machine with no GPU, or a browser that will not use it): there BokehJS copies
  // each WebGL picture back into the page's 2D canvas on the CPU, and that copy alone costs more than drawing the
  // few thousand points the level of detail hands it (bench/RESULTS.md, the explore page). ?backend=webgl|canvas
  // overrides the choice. ----
  const SOFTWARE = /swiftshader|llvmpipe|softpipe|lavapipe|software|basic render/i;
  function chooseBackend() {
    const asked = new URLSearchParams(location.search).get("backend");
    const context = (opts) => document.createElement("canvas").getContext("webgl", opts);
    const gl = context(), fast = context({ failIfMajorPerformanceCaveat: true });  // null where WebGL is software
    let renderer = null;
    if (gl) {
      const ext = gl.getExtension("WEBGL_debug_renderer_info");
      renderer = String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    }
    for (const c of [gl, fast]) { const lose = c && c.getExtension("WEBGL_lose_context"); if (lose) lose.loseContext(); }
    if (!gl) return { backend: "canvas", renderer, why: "this browser has no WebGL" };
    if (asked === "webgl" || asked === "canvas") return { backend: asked, renderer, why: "?backend=" + asked };
    return !fast || SOFTWARE.test(renderer) ? { backend: "canvas", renderer, why: "WebGL runs in software here" }
                                            : { backend: "webgl", renderer, why: "WebGL on the GPU" };
  }

  // ---- Bokeh models and views ----
  let doc = null;
  const model = (name) => doc.get_model_by_name(name);
  const view = (m) => window.Bokeh.index.find_one(m);
  const state = { layout: null, pcx: 0, pcy: 1, colour: null, x: null, y: null, hovered: null, thumb: null,
                  clicked: [], selection: [], busy: 0, errors: [] };

  // ---- level of detail: at most LIMIT points are handed to Bokeh, the first ones in view of a seeded
  // permutation, so the drawn points are a uniform sample of those in view and every point is drawn once the
  // view holds at most LIMIT; hover and clicks see the drawn points, box and lasso select every point ----
  // index.html?draw=N overrides the folder's limit (0: every point at every zoom, for a machine with a GPU)
  const asked = new URLSearchParams(location.search).get("draw"), DRAW = asked !== null && /^\d+$/.test(asked) ? +asked : M.draw;
  const LIMIT = DRAW > 0 ? DRAW : Infinity;
  function permutation(n, seed) {
    const r = mulberry32(seed), p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)), t = p[i]; p[i] = p[j]; p[j] = t; }
    return p;
  }
  const order = permutation(N, M.seed * 2 + 3), identity = Int32Array.from({ length: N }, (_, i) => i);
  const slot = new Int32Array(N).fill(-1);  // page index -> position among the drawn, -1 when not drawn
  let nullOrder = null;
  function view_box() {
    const m = model("map"), xr = m.x_range, yr = m.y_range;
    return [Math.min(xr.start, xr.end), Math.max(xr.start, xr.end), Math.min(yr.start, yr.end), Math.max(yr.start, yr.end)];
  }
  // during a pan or zoom at most GESTURE points are drawn: a thinner sample of the same kind (the first of the same
  // permutation), so each frame of the gesture costs less; the picture at rest (every point of a map that fits
  // under LIMIT, else the LIMIT sample) returns once the gesture has settled
  const GESTURE = Math.max(1, Math.floor(LIMIT / 5));
  const SETTLE_MS = 300;  // a gesture has ended when the ranges have not moved for this long (Bokeh's lod_interval)
  function pick(xs, ys, ord, limit = LIMIT) {  // the first `limit` of ord in view; and how many are in view
    const n = xs.length;
    if (n <= limit) return { idx: null, inView: n };  // a map that fits is drawn whole
    const [x0, x1, y0, y1] = view_box(), idx = [];
    let inView = 0;
    for (let k = 0; k < n; k++) {
      const i = ord[k], x = xs[i], y = ys[i];
      if (x >= x0 && x <= x1 && y >= y0 && y <= y1) { inView++; if (idx.length < limit) idx.push(i); }
    }
    return { idx: Int32Array.from(idx), inView };
  }
  const gather = (a, idx) => { if (!idx) return a; const out = new Float32Array(idx.length);
                               for (let k = 0; k < idx.length; k++) out[k] = a[idx[k]]; return out; };
  function draw(limit = LIMIT) {
    if (limit === LIMIT) { clearTimeout(redrawTimer); redrawTimer = null; }  // nothing left to settle
    drawnView = view_box();
    const p = pick(state.x, state.y, order, limit);
    if (state.drawn) for (const i of state.drawn) slot[i] = -1;
    state.drawn = p.idx || identity;
    state.drawn.forEach((i, k) => { slot[i] = k; });
    state.inView = p.inView;
    const src = model("points_source");
    src.data = { x: gather(state.x, p.idx), y: gather(state.y, p.idx), c: gather(currentColour(), p.idx) };
    mark(state.selection.length ? state.selection : state.clicked);
    if (limit === LIMIT) { state.restPick = p; state.shade = shade(state.x, state.y, "density_source", "map", sampled(p)); }
    drawNull(limit);
    status();
  }
  // ---- the shade: where the drawn points are a sample, every point in view binned to 2 x 2 pixels of the frame,
  // drawn in grey under the dots (darker where more points fall), so no point is missing from the picture at any
  // zoom. Made at rest; while the ranges move BokehJS stretches the last one with the view. (On the WebGL backend
  // BokehJS draws it with WebGL too: one more copy of the WebGL canvas a frame, which costs little on a GPU.) ----
  const SHADE_PX = 2, SHADE_RGB = [40, 40, 40];
  let ndarray = null;
  function noShade(sourceName) {
    const src = model(sourceName);
    if (src.data.image.length) src.data = { image: [], x: [], y: [], dw: [], dh: [] };
    return null;
  }
  const laidOut = (f) => f.width >= 2 * SHADE_PX && f.height >= 2 * SHADE_PX;  // (else see reshade)
  function shade(xs, ys, sourceName, plotName, on) {
    const src = model(sourceName), f = view(model(plotName)).frame.bbox;
    if (!on || !laidOut(f)) return noShade(sourceName);
    const [x0, x1, y0, y1] = view_box();
    const W = Math.max(1, Math.round(f.width / SHADE_PX)), H = Math.max(1, Math.round(f.height / SHADE_PX));
    const counts = new Uint32Array(W * H), sx = W / (x1 - x0), sy = H / (y1 - y0);
    for (let i = 0; i < xs.length; i++) {  // the right and top edges count in the last bin (as numpy's histogram2d)
      const x = xs[i], y = ys[i];
      if (!(x >= x0 && x <= x1 && y >= y0 && y <= y1)) continue;
      counts[Math.min(H - 1, Math.floor((y - y0) * sy)) * W + Math.min(W - 1, Math.floor((x - x0) * sx))]++;
    }
    let max = 0;
    for (let b = 0; b < counts.length; b++) if (counts[b] > max) max = counts[b];
    const rgba = new Uint32Array(W * H), lm = max > 1 ? Math.log(max) : 1, [r, g, bl] = SHADE_RGB;
    for (let b = 0; b < counts.length; b++) {  // alpha from 0.15 (one point) to 0.75 (the fullest bin), log scale
      if (!counts[b]) continue;
      const a = Math.round(255 * (0.15 + 0.6 * Math.log(counts[b]) / lm));
      rgba[b] = ((a << 24) | (bl << 16) | (g << 8) | r) >>> 0;  // little-endian RGBA
    }
    if (!ndarray) ndarray = window.Bokeh.require("core/util/ndarray").ndarray;
    src.data = { image: [ndarray(rgba, { shape: [H, W] })], x: [x0], y: [y0], dw: [x1 - x0], dh: [y1 - y0] };
    return { counts, W, H, box: [x0, x1, y0, y1] };
  }
  const sampled = (p) => p.idx !== null && p.inView > p.idx.length;  // some points in view are not drawn
  // BokehJS lays a map out anew when its size changes (the null map shown or hidden, the window resized): a shade
  // made for the old frame is made again
  function reshade() {
    if (!api.ready || redrawTimer !== null) return;  // (a gesture's own redraw comes)
    const stale = (plot, p, sh) => {
      const f = view(model(plot)).frame.bbox;
      const want = !!p && sampled(p) && laidOut(f);
      return want !== !!sh || (!!sh && (Math.round(f.width / SHADE_PX) !== sh.W || Math.round(f.height / SHADE_PX) !== sh.H));
    };
    if (stale("map", state.restPick, state.shade) ||
        ($("show-null").checked && stale("null_map", state.nullPick, state.nullShade))) draw();
  }
  let redrawTimer = null, thinning = false, lastChange = 0, lastShown = 0, seenChange = 0, drawnView = null;
  const thin = (n) => n > GESTURE;  // a map that a gesture draws thinner
  function rangesChanged() {  // after pan or zoom: draw what is now in view (once the gesture has settled)
    if (!api.ready || (!thin(N) && (!$("show-null").checked || !thin((state.nx || []).length)))) return;
    // BokehJS runs these callbacks a moment later: ranges set by fit() and drawn at once have not moved since
    if (drawnView && view_box().every((v, k) => v === drawnView[k])) return;
    lastChange = performance.now();
    if (GESTURE < LIMIT && !thinning) {  // the thin sample of the new view, once x and y have both changed
      thinning = true;
      queueMicrotask(() => { thinning = false; draw(GESTURE); });
    }
    if (redrawTimer === null) redrawTimer = setTimeout(settle, SETTLE_MS);
  }
  // the gesture has ended when its last change has reached the screen and the ranges have rested SETTLE_MS since:
  // on a slow machine a picture can take longer than SETTLE_MS, and the gesture goes on meanwhile
  function settle() {
    const now = performance.now(), unseen = seenChange < lastChange && now - lastChange < 5000;
    const rest = now - Math.max(lastChange, lastShown);
    if (unseen || rest < SETTLE_MS) { redrawTimer = setTimeout(settle, unseen ? 30 : SETTLE_MS - rest); return; }
    redrawTimer = null;
    draw();
  }
  // BokehJS has painted the map: on screen by the second animation frame after. Only the first paint after a change
  // counts (BokehJS repaints once more 500 ms after an interactive paint; and a paint begun before the change
  // does not show it)
  function painted() {
    const c = lastChange;
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (c > seenChange) { seenChange = c; lastShown = performance.now(); }
    }));
  }
  function fit() {  // ranges that hold every point, equal units on both axes (the frame's aspect)
    const pad = (lo, hi) => { const d = (hi - lo) || 1; return [lo - 0.05 * d, hi + 0.05 * d]; };
    let [x0, x1] = pad(...extent(state.x)), [y0, y1] = pad(...extent(state.y));
    const f = view(model("map")).frame.bbox, px = (x1 - x0) / Math.max(f.width, 1), py = (y1 - y0) / Math.max(f.height, 1);
    if (px > py) { const c = (y0 + y1) / 2, h = px * f.height / 2; y0 = c - h; y1 = c + h; }
    else { const c = (x0 + x1) / 2, w = py * f.width / 2; x0 = c - w; x1 = c + w; }
    const m = model("map");
    m.x_range.setv({ start: x0, end: x1, reset_start: x0, reset_end: x1 });
    m.y_range.setv({ start: y0, end: y1, reset_start: y0, reset_end: y1 });
  }
  function extent(a) { let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < a.length; i++) { const v = a[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    return isFinite(lo) ? [lo, hi] : [0, 1]; }

  function setLayout(name, i, j) {
    state.layout = name;
    $("layout").value = name;  // the controls show what a script chose too
    if (i != null) state.pcx = i;
    if (j != null) state.pcy = j;
    $("pcx").value = state.pcx; $("pcy").value = state.pcy;
    const c = coords(name, state.pcx, state.pcy);
    state.x = c.x; state.y = c.y; state.px = c.px; state.py = c.py; state.nx = c.nx; state.ny = c.ny;
    if (!nullOrder || nullOrder.length !== c.nx.length) nullOrder = permutation(c.nx.length, M.seed * 2 + 4);
    state.selection = []; state.clicked = [];
    fit();
    draw();
    updateProbes();
    $("pc-axes").style.display = layouts[name].pcs ? "" : "none";
    model("map").title.text = "data: " + layouts[name].label + (name === "pca" ? ` PC${state.pcx + 1} x PC${state.pcy + 1}` : "");
    model("null_map").title.text = "null (fitted normal): " + (name === "tsne" ? "its t-SNE map" : "draws, same plane");
    clearHighlight();
    status();
  }
  function drawNull(limit = LIMIT) {  // the null map's points are handed to Bokeh only while it is shown
    const on = $("show-null").checked;
    $("map-null").style.display = on ? "" : "none";
    if (!on) {
      model("null_source").data = { x: [], y: [] };
      state.nullShade = noShade("null_density_source");
      state.nullPick = null;
      return;
    }
    const p = pick(state.nx, state.ny, nullOrder, limit);
    model("null_source").data = { x: gather(state.nx, p.idx), y: gather(state.ny, p.idx) };
    if (limit === LIMIT) { state.nullPick = p; state.nullShade = shade(state.nx, state.ny, "null_density_source", "null_map", sampled(p)); }
  }
  function currentColour() {
    const c = byName[state.colour];
    if (!c) return new Float32Array(N).fill(NaN);
    return c.values;
  }
  function updateProbes() {
    const on = state.colour === "void_depth", r = model("probes");
    const has = on && state.px != null;
    r.visible = has;
    model("probes_source").data = has ? { x: state.px, y: state.py, c: probes.depth.data }
                                      : { x: [], y: [], c: [] };
  }
  function setColour(name) {
    state.colour = name;
    $("colour").value = name;
    const mapper = model("mapper");
    if (name === "void_depth") {
      const d = probes.depth.data, s = Array.from(d).sort((a, b) => a - b);
      mapper.palette = viridis; mapper.low = s[Math.floor(0.01 * (s.length - 1))]; mapper.high = s[Math.floor(0.99 * (s.length - 1))];
      model("points_source").data = { ...model("points_source").data, c: new Float32Array(state.drawn.length).fill(NaN) };
      updateProbes();
      legend({ label: "void depth of face-map probes", low: mapper.low, high: mapper.high, categories: null,
               note: state.px == null ? "probes are drawn on the PCA and dominant planes (a t-SNE map has no exact place for new points)" : "" });
      return;
    }
    const c = byName[name];
    if (c.categories) {
      mapper.palette = CATEGORICAL.slice(0, c.categories.length); mapper.low = -0.5; mapper.high = c.categories.length - 0.5;
    } else { mapper.palette = viridis; mapper.low = c.low; mapper.high = c.high; }
    model("points_source").data = { ...model("points_source").data, c: gather(c.values, state.drawn.length === N ? null : state.drawn) };
    updateProbes();
    legend(c);
  }
  let viridis = null;
  function legend(c) {
    const el = $("legend");
    let body;
    if (c.categories) {
      const counts = new Array(c.categories.length).fill(0), v = c.values;
      for (let i = 0; i < v.length; i++) if (v[i] >= 0) counts[v[i]]++;
      body = '<ul class="swatches">' + c.categories.map((k, t) =>
        `<li><span class="sw" style="background:${CATEGORICAL[t]}"></span>${esc(k)} <small>(${counts[t].toLocaleString()})</small></li>`).join("") +
        '<li><span class="sw" style="background:#c8c8c8"></span>no value</li></ul>';
    } else {
      const stops = [0, 0.25, 0.5, 0.75, 1].map((f) => viridis[Math.round(f * (viridis.length - 1))]).join(",");
      body = `<div class="bar" style="background:linear-gradient(to right,${stops})"></div>` +
             `<div class="ends"><span>${fmt(c.low)}</span><span>${fmt(c.high)}</span></div>`;
    }
    el.innerHTML = `<h2>colour: <span id="legend-title">${esc(c.label)}</span></h2>${body}` +
                   (c.note ? `<p class="hint">${esc(c.note)}</p>` : "");
  }
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
  const fmt = (v) => (v == null || !isFinite(v)) ? "-" : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);

  // ---- thumbnails: atlas sprites ----
  const T = M.thumb, PER = M.atlas, SHOW = 64;
  function sprite(el, kind, i) {
    if ((kind === "img" && !M.images) || (kind === "rec" && !M.reconstructions)) {
      el.style.backgroundImage = "none";
      el.title = kind === "img" ? "no image cache with these latents' rows" : "no decoder for these latents";
      return null;
    }
    const a = Math.floor(i / (PER * PER)), t = i % (PER * PER), col = t % PER, row = Math.floor(t / PER);
    const src = `thumbs/${kind}_${String(a).padStart(4, "0")}.jpg`, f = SHOW / T;
    el.style.backgroundImage = `url("${src}")`;
    el.style.backgroundPosition = `${-col * SHOW}px ${-row * SHOW}px`;
    el.style.backgroundSize = `${PER * T * f}px auto`;
    return { src, col, row, tile: T };
  }

  // ---- hover ----
  function hover(cb) {
    if (!api.ready) return;
    const ind = cb.index && cb.index.indices;
    if (!ind || ind.length === 0) return;
    const pts = Array.from(ind, (k) => state.drawn[k]).filter((i) => i !== undefined);  // drawn since
    if (pts.length === 0) return;
    showPoint(cb.geometry ? nearest(pts, cb.geometry.x, cb.geometry.y) : pts[0]);
  }
  function showPoint(i) {
    if (state.hovered === i) return;
    state.hovered = i;
    state.thumb = sprite($("hover-img"), "img", i);
    sprite($("hover-rec"), "rec", i);
    const rows = [["id", ids[i]]];
    for (const name of ["radius", "mahalanobis", "local_dim", "recon_mse"]) {
      if (byName[name]) rows.push([byName[name].label, fmt(byName[name].values[i])]);
    }
    if (byName.split) rows.push(["split", byName.split.categories[byName.split.values[i]] || "-"]);
    $("hover-info").innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd${k === "id" ? ' id="hover-id"' : ""}>${esc(v)}</dd>`).join("");
  }

  // ---- click and selection ----
  function clearHighlight() { model("highlight_source").data = { x: [], y: [], kind: [] }; }
  function highlight(list) {
    model("highlight_source").data = { x: list.map((i) => state.x[i]), y: list.map((i) => state.y[i]), kind: list.map(() => "n") };
  }
  // Bokeh's selection holds positions among the drawn points; it updates it, then says how (geometry)
  function select(indices) { state.hit = Array.from(indices, (k) => state.drawn[k]); }
  function mark(list) {  // the marked dots stand out; the rest and the shade fade
    model("points_source").selected.indices = list.map((i) => slot[i]).filter((k) => k >= 0);
    model("density").glyph.global_alpha = list.length ? 0.35 : 1;
  }
  function within(g) {  // every page index inside a box or lasso (data coordinates), drawn or not
    const out = [], X = state.x, Y = state.y;
    if (g.type === "rect") {
      const x0 = Math.min(g.x0, g.x1), x1 = Math.max(g.x0, g.x1), y0 = Math.min(g.y0, g.y1), y1 = Math.max(g.y0, g.y1);
      for (let i = 0; i < N; i++) if (X[i] >= x0 && X[i] <= x1 && Y[i] >= y0 && Y[i] <= y1) out.push(i);
      return out;
    }
    const px = Array.from(g.x), py = Array.from(g.y), m = px.length;  // lasso: even-odd rule
    const [bx0, bx1] = extent(px), [by0, by1] = extent(py);
    for (let i = 0; i < N; i++) {
      const x = X[i], y = Y[i];
      if (x < bx0 || x > bx1 || y < by0 || y > by1) continue;
      let inside = false;
      for (let a = 0, b = m - 1; a < m; b = a++) {
        if ((py[a] > y) !== (py[b] > y) && x < (px[b] - px[a]) * (y - py[a]) / (py[b] - py[a]) + px[a]) inside = !inside;
      }
      if (inside) out.push(i);
    }
    return out;
  }
  function nearest(list, x, y) {
    let best = -1, bd = Infinity;
    for (const i of list) { const dx = state.x[i] - x, dy = state.y[i] - y, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; } }
    return best;
  }
  // after each selection Bokeh reports its geometry: a point (tap; shift-tap appends) or a box or lasso
  async function geometry(g, final) {
    if (final === false || !api.ready) return;
    state.geometries = (state.geometries || 0) + 1;
    const token = ++state.busy;
    try {
      if (g.type === "point") {
        const hit = nearest(state.hit || [], g.x, g.y);
        state.selection = [];
        if (hit < 0) { state.clicked = []; clearHighlight(); $("neighbours").innerHTML = ""; $("path").innerHTML = ""; return; }
        state.clicked = state.shift && state.clicked.length === 1 && state.clicked[0] !== hit ? [state.clicked[0], hit] : [hit];
        mark(state.clicked);
        await clicked(state.clicked, token);
      } else {
        state.selection = within(g);
        state.clicked = [];
        mark(state.selection);
        if (state.selection.length === 0) { $("selection-info").innerHTML = "<p>nothing selected</p>"; return; }
        await summary(state.selection, token);
      }
    } catch (err) { state.errors.push(String(err)); $("status").textContent = "error: " + err.message; }
  }
  async function clicked(sel, token) {
    const a = sel[0];
    let b = sel[1];
    const nb = await neighbours(a);
    if (token !== state.busy) return;
    const shown = nb.slice(0, SHOWN_NEIGHBOURS);
    highlight([a, ...shown]);
    $("neighbours").innerHTML = `<h3>${shown.length} nearest in z of ${esc(ids[a])}</h3>` + shown.map((j) =>
      `<div class="thumb" data-i="${j}" title="${esc(ids[j])}"></div>`).join("");
    for (const el of $("neighbours").querySelectorAll(".thumb")) sprite(el, M.images ? "img" : "rec", +el.dataset.i);
    if (b == null) b = shown.length ? shown[0] : null;
    if (!DEC) { $("path").innerHTML = "<p class=\"hint\">no decoder for these latents: paths are not decoded</p>"; return; }
    if (b == null) { $("path").innerHTML = "<p class=\"hint\">no neighbour on this map to walk to</p>"; return; }
    const [za, zb] = await latents([a, b]);
    if (token !== state.busy) return;
    const box = $("path");
    box.innerHTML = `<h3>decoded path ${esc(ids[a])} &rarr; ${esc(ids[b])} (${sel.length === 2 ? "second click" : "nearest"}), ${PATH_STEPS} steps</h3>`;
    for (let s = 0; s < PATH_STEPS; s++) {
      const t = s / (PATH_STEPS - 1), z = new Float32Array(M.d);
      for (let d = 0; d < M.d; d++) z[d] = (1 - t) * za[d] + t * zb[d];
      const cv = document.createElement("canvas");
      cv.className = "decoded"; drawDecoded(cv, decode(z)); box.appendChild(cv);
    }
    state.path = [a, b];
  }
  async function summary(sel, token) {
    const info = $("selection-info");
    info.innerHTML = `<p><b id="selection-size">${sel.length.toLocaleString()}</b> points selected; decoding their mean latent...</p>`;
    const zs = await latents(sel);
    if (token !== state.busy) return;
    const mean = new Float64Array(M.d);
    for (const z of zs) for (let d = 0; d < M.d; d++) mean[d] += z[d];
    const zm = new Float32Array(M.d);
    for (let d = 0; d < M.d; d++) zm[d] = mean[d] / zs.length;
    state.meanLatent = zm;
    let rows = "";
    for (let j = 0; j < A; j++) {
      let pos = 0, lab = 0;
      for (const i of sel) { const v = labels[i * A + j]; if (v >= 0) { lab++; pos += v; } }
      rows += `<tr><td>${esc(D.attributes[j])}</td><td>${lab ? (100 * pos / lab).toFixed(1) + "%" : "-"}</td>` +
              `<td>${allShares[j]}</td></tr>`;
    }
    info.innerHTML = `<p><b id="selection-size">${sel.length.toLocaleString()}</b> points selected</p>` +
      (DEC ? `<figure><canvas id="mean-face" class="decoded"></canvas><figcaption>decoded from their mean latent</figcaption></figure>`
           : `<p class="hint">no decoder for these latents: no mean face</p>`) +
      (A ? `<table id="shares"><tr><th>attribute</th><th>selection</th><th>all</th></tr>${rows}</table>` : "");
    if (DEC) drawDecoded($("mean-face"), decode(zm));
  }

  // ---- controls ----
  function fillSelect(el, options, value) {
    el.innerHTML = options.map(([v, t]) => `<option value="${esc(v)}">${esc(t)}</option>`).join("");
    el.value = value;
  }
  function status() {
    const rv = view(model("points"));
    const webgl = !!(rv && rv.glyph && rv.glyph.has_webgl && rv.glyph.has_webgl());
    state.webgl = webgl;
    const drawn = state.drawn ? state.drawn.length : N;
    $("status").textContent = `${N.toLocaleString()} points` + (M.all_points ? " (every latent)" : ` of ${M.n_latents.toLocaleString()}`) +
      (drawn < state.inView ? ` · dots: ${drawn.toLocaleString()} of the ${state.inView.toLocaleString()} in view` +
                              (state.shade ? ", grey shade: every one" : "") + " (zoom in for every dot)" : "") +
      ` · ${layouts[state.layout].label} · ${webgl ? "WebGL" : "2D canvas"} (${state.backend.why})`;
  }
  function start() {
    doc = window.Bokeh.documents.find((d) => d.get_model_by_name("points_source"));
    viridis = model("mapper").palette.slice();
    $("show-null").checked = N <= NULL_SHOWN_UP_TO;
    $("map-null").style.display = $("show-null").checked ? "" : "none";
    // the first fit wants the data map's frame as BokehJS lays it out without the null map: two frames on
    requestAnimationFrame(() => requestAnimationFrame(begin));
  }
  function begin() {
    const names = Object.keys(layouts);
    fillSelect($("layout"), names.map((k) => [k, layouts[k].label]), names[0]);
    const pcs = [...Array(M.pcs).keys()].map((k) => [k, `PC${k + 1}`]);
    fillSelect($("pcx"), pcs, 0); fillSelect($("pcy"), pcs, 1);
    const opts = colours.map((c) => [c.name, c.label]);
    if (probes.depth) opts.push(["void_depth", "void depth (face-map probes)"]);
    const first = byName.radius ? "radius" : opts[0][0];
    fillSelect($("colour"), opts, first);
    state.colour = first;
    setLayout(names[0]);
    setColour(first);
    $("layout").onchange = (e) => setLayout(e.target.value);
    $("pcx").onchange = (e) => setLayout("pca", +e.target.value, null);
    $("pcy").onchange = (e) => setLayout("pca", null, +e.target.value);
    $("colour").onchange = (e) => setColour(e.target.value);
    $("show-null").onchange = () => drawNull();  // reshade() follows BokehJS's new layout
    const missing = M.missing || [];
    $("missing").textContent = missing.length ? "Not on this page: " + missing.join("; ") : "";
    view(model("map")).repainted.connect(painted);
    view(model("map")).repainted.connect(reshade);
    view(model("null_map")).repainted.connect(reshade);
    api.ready = true;
    status();
  }

  // screen position (client pixels) of point i on the data map: for tests and for people scripting the page
  function screenOf(i) {
    const rv = view(model("points")), pv = view(model("map"));
    const { x_scale, y_scale } = rv.coordinates;
    const r = pv.canvas_view.events_el.getBoundingClientRect();
    return { x: r.left + x_scale.compute(state.x[i]), y: r.top + y_scale.compute(state.y[i]) };
  }

  window.addEventListener("pointerdown", (e) => { state.shift = e.shiftKey; }, true);
  const api = { ready: false, n: N, state, chunk, decode, latents, neighbours, hover, select, geometry, setLayout, setColour,
                rangesChanged, draw, lod: { limit: LIMIT, gesture: GESTURE, settle_ms: SETTLE_MS }, settled: () => redrawTimer === null,
                screenOf, showPoint, layouts: () => Object.keys(layouts), colours: () => colours.map((c) => c.name) };
  window.zspace = api;
  state.backend = chooseBackend();
  function embed() {  // the plots, with the chosen backend (page.py leaves the embedding to this script)
    const fail = (e) => { $("status").textContent = "the plots could not be drawn: " + e; console.error(e); };
    try {
      const B = JSON.parse($("bokeh-doc").textContent);
      for (const d of Object.values(B.docs)) for (const r of d.roots) {
        if (r.attributes) r.attributes.output_backend = state.backend.backend;
      }
      Promise.resolve(window.Bokeh.embed.embed_items(B.docs, B.items)).catch(fail);
    } catch (e) { fail(e); }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", embed); else embed();
  (function wait() {
    const ok = window.Bokeh && window.Bokeh.documents && window.Bokeh.documents.some((d) => d.get_model_by_name("points_source"))
      && view(window.Bokeh.documents.find((d) => d.get_model_by_name("points_source")).get_model_by_name("points"));
    if (ok) start(); else setTimeout(wait, 30);
  })();
})();
