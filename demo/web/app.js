// The page: load an exported CGRSeg ONNX file and images (file pickers,
// drag and drop, or ?model=URL), segment each image with onnxruntime-web
// and show the overlay, the classes present and the inference time.
//
// URL parameters: model (URL of an .onnx file), name (the model's name to
// show; default: the URL's file name), resize=1, opacity (0-1),
// threads (WASM threads; more than 1 needs a cross-origin isolated page,
// i.e. served with COOP/COEP headers as demo/web_demo.py --serve does).
//
// Everything read from a model or image file reaches the page as text
// (textContent) or pixels, never as HTML.

import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import {readOnnxMetadata} from './onnx_metadata.js';
import {argmaxLabels, bgrPlanes, exporterMetadata, labelCounts,
        labelsFromOutput, overlay, paletteFor, resizeLinear,
        resizeNearest} from './segment.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const requestedThreads = Number(params.get('threads')) || 0;
const threads = crossOriginIsolated ?
    (requestedThreads || Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
ort.env.wasm.numThreads = threads;
ort.env.wasm.wasmPaths =
    new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;

let model = null;   // {name, session, meta, output}
let image = null;   // {name, rgba, width, height}
let result = null;  // {labels, palette, ms} of the image shown

// --- what happens, one task at a time ----------------------------------

// Tasks (model loads, images) run in order; tools driving the page wait
// for the n-th to settle with window.cgrsegDemo.whenSettled(n).
let work = Promise.resolve();
let settled = 0;
let lastError = null;
const waiters = [];

// What the page shows, as its text: the legend's class names as the
// reader sees them (markup in a name stays visible as text).
function status() {
  return {
    settled,
    error: lastError,
    classesPresent: Array.from(document.querySelectorAll('#legend .name'),
                               (element) => element.textContent),
    inferenceMs: result ? result.ms : null,
    threads,
  };
}

function enqueue(task) {
  work = work.then(async () => {
    lastError = null;
    showMessage('');
    try {
      await task();
    } catch (err) {
      lastError = err.message;
      showMessage(err.message, true);
    }
    settled++;
    for (const waiter of waiters.splice(0)) waiter();
  });
}

function whenSettled(count) {
  return new Promise((resolve) => {
    const check = () => settled >= count ? resolve(status()) :
                                           waiters.push(check);
    check();
  });
}

window.cgrsegDemo = {whenSettled, status};

function showMessage(text, isError = false) {
  $('message').textContent = text;
  $('message').className = isError ? 'error' : '';
}

// --- model ----------------------------------------------------------------

async function loadModel(name, bytes) {
  const props = readOnnxMetadata(bytes);
  if (!props) {
    throw new Error(`${name} is not an ONNX file: it does not parse as an ` +
                    'ONNX model. Pick the .onnx file that ' +
                    'tools/deployment/pytorch2onnx.py wrote.');
  }
  let meta;
  try {
    meta = exporterMetadata(props);
  } catch (err) {
    throw new Error(`${name} cannot be used: ${err.message}`);
  }
  let session;
  try {
    session = await ort.InferenceSession.create(
        bytes, {executionProviders: ['wasm']});
  } catch (err) {
    throw new Error(`onnxruntime-web cannot load ${name}: ${err.message}`);
  }
  const output = ['labels', 'logits'].find(
      (name) => session.outputNames.includes(name));
  if (!session.inputNames.includes('images') || !output) {
    await session.release();
    throw new Error(`${name} has no "images" input or no "labels" / ` +
                    '"logits" output: export it with pytorch2onnx.py.');
  }
  if (model) await model.session.release();
  model = {name, session, meta, output};
  clearResult();
  const size = meta.inputShape ?
      `${meta.inputShape[0]}×${meta.inputShape[1]} images only` : 'any size';
  const isolation = crossOriginIsolated ? '' :
      ' (more need a cross-origin isolated page: COOP/COEP headers)';
  $('model-info').textContent =
      `${name}: ${meta.classes.length} classes, input ${size}, output ` +
      `${output}; onnxruntime-web ${ort.env.versions?.web ?? ''} WASM, ` +
      `${threads} thread${threads > 1 ? 's' : ''}${isolation}`;
  if (image) await segmentImage();
}

async function fetchModel(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`cannot fetch the model ${url}: ${err.message}`);
  }
  if (!response.ok) {
    throw new Error(`cannot fetch the model ${url}: HTTP ${response.status}`);
  }
  const name = params.get('name') || url.split('/').pop() || url;
  await loadModel(name, new Uint8Array(await response.arrayBuffer()));
}

// --- images ---------------------------------------------------------------

async function readImage(file) {
  let bitmap;
  try {
    // Pixel values as stored, like OpenCV's imread: no colour management.
    bitmap = await createImageBitmap(
        file, {colorSpaceConversion: 'none', premultiplyAlpha: 'none'});
  } catch (err) {
    throw new Error(`cannot read image ${file.name}: not an image format ` +
                    'this browser decodes (PNG, JPEG, WebP, BMP, GIF).');
  }
  const canvas = $('image');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  image = {name: file.name, rgba: pixels.data, width: pixels.width,
           height: pixels.height};
  if (!model) {
    showMessage('Now choose a model (.onnx).');
    return;
  }
  await segmentImage();
}

async function segmentImage() {
  const {name, rgba, width, height} = image;
  const fixed = model.meta.inputShape;
  let input = rgba, h = height, w = width;
  if (fixed && (fixed[0] !== height || fixed[1] !== width)) {
    if (!$('resize-input').checked) {
      clearResult();
      throw new Error(
          `the model was exported for ${fixed[0]}x${fixed[1]} images, ` +
          `${name} is ${height}x${width}: tick "resize", or export with ` +
          '--dynamic-shape.');
    }
    [h, w] = fixed;
    input = resizeLinear(rgba, width, height, w, h);
  }
  const tensor = new ort.Tensor('float32', bgrPlanes(input, w, h),
                                [1, 3, h, w]);
  let outputs;
  const start = performance.now();
  try {
    outputs = await model.session.run({images: tensor}, [model.output]);
  } catch (err) {
    throw new Error(`onnxruntime-web failed on ${name} (${height}x` +
                    `${width}): ${err.message}`);
  }
  const ms = performance.now() - start;
  const out = outputs[model.output];
  let labels = model.output === 'labels' ?
      labelsFromOutput(out.data) : argmaxLabels(out.data, out.dims[1], h * w);
  out.dispose();
  if (h !== height || w !== width) {
    labels = resizeNearest(labels, w, h, width, height);
  }
  result = {labels, palette: paletteFor(model.meta.palette, labels), ms};
  render();
}

// --- drawing --------------------------------------------------------------

function clearResult() {
  result = null;
  $('legend').replaceChildren();
  $('result').hidden = true;
}

function render() {
  const {rgba, width, height} = image;
  const canvas = $('overlay');
  canvas.width = width;
  canvas.height = height;
  const opacity = Number($('opacity-input').value);
  const pixels = overlay(rgba, result.labels, result.palette, opacity);
  canvas.getContext('2d').putImageData(
      new ImageData(pixels, width, height), 0, 0);
  $('timing').textContent = `${image.name}, ${height}×${width}: ` +
      `inference ${result.ms.toFixed(0)} ms`;
  const legend = $('legend');
  legend.replaceChildren();
  const total = result.labels.length;
  for (const [label, count] of labelCounts(result.labels)) {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.backgroundColor = `rgb(${result.palette[label].join(',')})`;
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = model.meta.classes[label] ?? String(label);
    const share = document.createElement('span');
    share.textContent = `${(100 * count / total).toFixed(1)} %`;
    item.append(swatch, name, share);
    legend.append(item);
  }
  $('result').hidden = false;
}

// --- inputs ---------------------------------------------------------------

function openModel(file) {
  enqueue(async () => loadModel(
      file.name, new Uint8Array(await file.arrayBuffer())));
}

function openImage(file) {
  enqueue(() => readImage(file));
}

$('model-input').addEventListener('change', (event) => {
  if (event.target.files.length) openModel(event.target.files[0]);
});
$('image-input').addEventListener('change', (event) => {
  if (event.target.files.length) openImage(event.target.files[0]);
});
$('resize-input').addEventListener('change', () => {
  if (model && image) enqueue(segmentImage);
});
$('opacity-input').addEventListener('input', () => {
  if (result) render();
});
document.body.addEventListener('dragover', (event) => {
  event.preventDefault();
  document.body.classList.add('dragging');
});
document.body.addEventListener('dragleave', () => {
  document.body.classList.remove('dragging');
});
document.body.addEventListener('drop', (event) => {
  event.preventDefault();
  document.body.classList.remove('dragging');
  for (const file of event.dataTransfer.files) {
    if (file.name.toLowerCase().endsWith('.onnx')) openModel(file);
    else openImage(file);
  }
});

$('resize-input').checked = params.get('resize') === '1';
if (params.has('opacity')) $('opacity-input').value = params.get('opacity');
if (params.has('model')) {
  enqueue(() => fetchModel(params.get('model')));
} else {
  showMessage('Choose an exported model (.onnx) and an image.');
}
