// What demo/onnx_demo.py computes, for the page: the exporter's metadata,
// the model input from an image, the label map from the outputs, the
// resizes of its --resize and the overlay. Pure functions on typed arrays;
// images are RGBA (the canvas' ImageData layout), label maps Int32Array
// (H·W, row-major).

import {FALLBACK_PALETTE} from './fallback_palette.js';

// --- the exporter's metadata (tools/deployment/pytorch2onnx.py) ---------

function parseJson(props, key) {
  try {
    return JSON.parse(props.get(key));
  } catch (err) {
    throw new Error(`its metadata entry "${key}" is not JSON`);
  }
}

function isRgbList(palette) {
  return Array.isArray(palette) && palette.every(
      (colour) => Array.isArray(colour) && colour.length === 3 &&
          colour.every((c) => Number.isInteger(c) && c >= 0 && c <= 255));
}

// The metadata pytorch2onnx.py stores, checked: {outputs, inputShape
// ([H, W] or null for any size), classes (strings), palette (RGB triples)}.
// Throws an Error saying what is missing.
export function exporterMetadata(props) {
  if (!props.has('outputs') || !props.has('input_shape')) {
    throw new Error(
        'it has no "outputs" and "input_shape" metadata: it was not ' +
        'written by tools/deployment/pytorch2onnx.py. Export it with that ' +
        'tool (it stores the class names, the palette and the input size).');
  }
  const outputs = parseJson(props, 'outputs');
  const shape = parseJson(props, 'input_shape');
  if (!Array.isArray(outputs) ||
      !outputs.some((name) => name === 'labels' || name === 'logits')) {
    throw new Error('its metadata names neither a "labels" nor a "logits" ' +
                    'output');
  }
  const fixed = Array.isArray(shape) && shape.length === 2 &&
      shape.every((side) => Number.isInteger(side) && side > 0);
  if (!fixed && shape !== 'dynamic') {
    throw new Error('its "input_shape" metadata is neither [H, W] nor ' +
                    '"dynamic"');
  }
  const classes = props.has('classes') ? parseJson(props, 'classes') : [];
  const palette = props.has('palette') ? parseJson(props, 'palette') : [];
  if (!isRgbList(palette)) {
    throw new Error('its "palette" metadata is not a list of RGB triples ' +
                    '0-255');
  }
  return {
    outputs,
    inputShape: fixed ? shape : null,
    classes: Array.isArray(classes) ? classes.map(String) : [],
    palette,
  };
}

// --- model input and label maps ----------------------------------------

// RGBA pixels → float32 (1, 3, H, W) BGR 0-255, what OpenCV's imread gives
// onnx_demo.py (the normalisation is inside the model).
export function bgrPlanes(rgba, width, height) {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    out[i] = rgba[4 * i + 2];
    out[plane + i] = rgba[4 * i + 1];
    out[2 * plane + i] = rgba[4 * i];
  }
  return out;
}

// int64 labels (BigInt64Array) or int32 → Int32Array.
export function labelsFromOutput(data) {
  return Int32Array.from(data, Number);
}

// (1, C, H, W) float32 logits → labels; the first class wins ties, like
// numpy's and torch's argmax.
export function argmaxLabels(logits, classes, plane) {
  const labels = new Int32Array(plane);
  const best = logits.slice(0, plane);
  for (let c = 1; c < classes; c++) {
    const offset = c * plane;
    for (let i = 0; i < plane; i++) {
      if (logits[offset + i] > best[i]) {
        best[i] = logits[offset + i];
        labels[i] = c;
      }
    }
  }
  return labels;
}

// --- OpenCV's resizes, as onnx_demo.py's --resize calls them ------------

// cvRound: to nearest, ties to even.
function roundHalfEven(x) {
  const r = Math.round(x);
  return (r - x === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

const COEF_BITS = 11;  // OpenCV's INTER_RESIZE_COEF_BITS
const COEF_SCALE = 1 << COEF_BITS;

// Source indices and fixed-point weights of cv2.resize INTER_LINEAR along
// one axis: float32 source coordinates (d + 0.5)·scale − 0.5, weights
// rounded to 11 bits each. OpenCV moves columns outside the image onto its
// edge with weights (1, 0), but keeps the weights of rows outside it and
// clamps their indices (``clampWeights`` false): both taps then read the
// edge row, rounded separately.
function linearTaps(src, dst, clampWeights) {
  const scale = 1 / (dst / src);
  const i0 = new Int32Array(dst);
  const i1 = new Int32Array(dst);
  const w0 = new Int32Array(dst);
  const w1 = new Int32Array(dst);
  for (let d = 0; d < dst; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (clampWeights && s < 0) f = 0, s = 0;
    if (clampWeights && s >= src - 1) f = 0, s = src - 1;
    i0[d] = Math.min(Math.max(s, 0), src - 1);
    i1[d] = Math.min(Math.max(s + 1, 0), src - 1);
    w0[d] = roundHalfEven(Math.fround(1 - f) * COEF_SCALE);
    w1[d] = roundHalfEven(f * COEF_SCALE);
  }
  return {i0, i1, w0, w1};
}

// cv2.resize(image, (dstW, dstH), interpolation=cv2.INTER_LINEAR) for
// 8-bit RGBA pixels (alpha set to 255): a horizontal pass to 11-bit fixed
// point, then OpenCV's vectorised vertical pass (each row's product
// rounded down to 16 bits, the sum to 8).
export function resizeLinear(rgba, srcW, srcH, dstW, dstH) {
  const xs = linearTaps(srcW, dstW, true);
  const ys = linearTaps(srcH, dstH, false);
  const rows = new Map();  // source row → horizontally resized row
  const row = (y) => {
    if (!rows.has(y)) {
      const out = new Int32Array(4 * dstW);
      const base = 4 * y * srcW;
      for (let x = 0; x < dstW; x++) {
        const s0 = base + 4 * xs.i0[x], s1 = base + 4 * xs.i1[x];
        for (let c = 0; c < 3; c++) {
          out[4 * x + c] = rgba[s0 + c] * xs.w0[x] + rgba[s1 + c] * xs.w1[x];
        }
      }
      rows.set(y, out);
    }
    return rows.get(y);
  };
  const out = new Uint8ClampedArray(4 * dstW * dstH);
  for (let y = 0; y < dstH; y++) {
    const r0 = row(ys.i0[y]), r1 = row(ys.i1[y]);
    const b0 = ys.w0[y], b1 = ys.w1[y];
    for (let x = 0; x < dstW; x++) {
      for (let c = 0; c < 3; c++) {
        const i = 4 * x + c;
        out[4 * (y * dstW + x) + c] =
            (((r0[i] >> 4) * b0 >> 16) + ((r1[i] >> 4) * b1 >> 16) + 2) >> 2;
      }
      out[4 * (y * dstW + x) + 3] = 255;
    }
    rows.delete(ys.i0[y] - 1);
  }
  return out;
}

// cv2.resize(labels, (dstW, dstH), interpolation=cv2.INTER_NEAREST):
// source index floor(d · src / dst) in OpenCV's double arithmetic.
export function resizeNearest(labels, srcW, srcH, dstW, dstH) {
  const fx = 1 / (dstW / srcW), fy = 1 / (dstH / srcH);
  const out = new Int32Array(dstW * dstH);
  for (let y = 0; y < dstH; y++) {
    const sy = Math.min(Math.floor(y * fy), srcH - 1);
    for (let x = 0; x < dstW; x++) {
      const sx = Math.min(Math.floor(x * fx), srcW - 1);
      out[y * dstW + x] = labels[sy * srcW + sx];
    }
  }
  return out;
}

// --- overlay ----------------------------------------------------------------

// The colours onnx_demo.py draws: the file's palette, or when it has fewer
// colours than the labels need, its fixed pseudo-random ones.
export function paletteFor(palette, labels) {
  let top = 0;
  for (const label of labels) top = Math.max(top, label);
  if (palette.length > top) return palette;
  return Array.from({length: top + 1},
                    (_, i) => FALLBACK_PALETTE[i % FALLBACK_PALETTE.length]);
}

// onnx_demo.py's overlay: image·(1 − opacity) + colour·opacity, truncated,
// with its float64 image term and float32 colour term.
export function overlay(rgba, labels, palette, opacity) {
  const out = new Uint8ClampedArray(rgba.length);
  const keep = 1 - opacity;
  const weight = Math.fround(opacity);
  for (let i = 0; i < labels.length; i++) {
    const colour = palette[labels[i]];
    for (let c = 0; c < 3; c++) {
      out[4 * i + c] = Math.trunc(
          rgba[4 * i + c] * keep + Math.fround(colour[c] * weight));
    }
    out[4 * i + 3] = 255;
  }
  return out;
}

// [label, pixel count] of the labels present, by label.
export function labelCounts(labels) {
  const counts = new Map();
  for (const label of labels) counts.set(label, (counts.get(label) || 0) + 1);
  return [...counts.entries()].sort((a, b) => a[0] - b[0]);
}
