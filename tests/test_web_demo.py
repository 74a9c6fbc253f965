"""The browser page (demo/web, onnxruntime-web) through demo/web_demo.py:
--check in headless Chromium draws onnx_demo.py's overlay, bad input gets
the page's message and a non-zero exit, names from a model file stay text,
and --serve serves the page and the model only, cross-origin isolated.

The browser tests need Chromium and the page's npm packages; without them
they skip and say how to install them (.ci/run does)."""
import json
import re
import subprocess
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from e2e import REPO, load_script, python, run
from test_deploy import ONNX_DEMO, images

WEB_DEMO = 'demo/web_demo.py'
HOW = ('install them with `apt-get install chromium` and `npm ci` in '
       'demo/web (.ci/run does both)')
HAVE_NPM = (REPO / 'demo/web/node_modules/onnxruntime-web/dist/'
            'ort.wasm.min.mjs').is_file()
HAVE_CHROMIUM = load_script(
    'demo/headless_chromium.py').find_chromium() is not None
needs_npm = pytest.mark.skipif(
    not HAVE_NPM, reason=f"needs the page's npm packages: {HOW}")
needs_browser = pytest.mark.skipif(
    not (HAVE_NPM and HAVE_CHROMIUM),
    reason=f"needs Chromium and the page's npm packages: {HOW}")
MARKUP = '<img src=x onerror="document.title=1">'


def edited(source: str, path: str, graph_outputs=None, **metadata) -> str:
    """A copy of the ONNX file ``source`` with metadata entries replaced
    (None: removed) and, if given, only the ``graph_outputs``."""
    import onnx
    model = onnx.load(source)
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in metadata.items():
        props.pop(key, None)
        if value is not None:
            props[key] = json.dumps(value)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    if graph_outputs:
        kept = [o for o in model.graph.output if o.name in graph_outputs]
        del model.graph.output[:]
        model.graph.output.extend(kept)
    onnx.save(model, path)
    return path


@pytest.fixture(scope='module')
def models(tmp_path_factory, demo_onnx):
    """The demo model exported once for any size with both outputs, and
    variants of that file: fixed-size metadata (the page and onnx_demo.py
    decide on resizing from it alone), logits only, no palette, class names
    holding markup, no exporter metadata."""
    out = tmp_path_factory.mktemp('web')
    dynamic = demo_onnx[0]
    classes = ['background', 'disc', 'square', 'triangle', 'bar']
    return dict(
        dynamic=dynamic,
        fixed=edited(dynamic, str(out / 'fixed.onnx'),
                     input_shape=[96, 128]),
        logits=edited(dynamic, str(out / 'logits.onnx'),
                      graph_outputs=['logits'], outputs=['logits']),
        no_palette=edited(dynamic, str(out / 'no_palette.onnx'),
                          palette=None),
        markup=edited(dynamic, str(out / 'markup.onnx'),
                      classes=[f'{MARKUP}<b>{c}</b>' for c in classes]),
        no_metadata=edited(dynamic, str(out / 'plain.onnx'), outputs=None,
                           input_shape=None))


def smooth_image(path, height, width, seed=0) -> str:
    """A picture of a few colour blobs (regions of several classes)."""
    blobs = images(6, 5, seed=seed)[0].permute(1, 2, 0).byte().numpy()
    cv2.imwrite(str(path), cv2.resize(blobs, (width, height)))
    return str(path)


def web_check(model, image, out, *options, check=True):
    return run(python(WEB_DEMO, '--check', model, image, '--out-file',
                      str(out), '--timeout', '120', *options), check=check)


@needs_browser
@pytest.mark.e2e
@pytest.mark.parametrize('model, size, options', [
    ('dynamic', (100, 76), []),     # sides not multiples of 32
    ('dynamic', (128, 160), []),
    ('fixed', (100, 76), ['--resize']),
    ('logits', (100, 76), []),      # the page takes the argmax
    ('no_palette', (100, 76), []),  # onnx_demo.py's fallback colours
])
def test_check_draws_the_overlay_of_onnx_demo(models, tmp_path, model,
                                             size, options):
    image = smooth_image(tmp_path / 'in.png', *size)
    web, native = tmp_path / 'web.png', tmp_path / 'native.png'
    proc = web_check(models[model], image, web, *options)
    assert f'{image} -> {web}' in proc.stdout
    # onnx_demo.py reads labels only: the logits-only file's labels are
    # those of the file it was cut from.
    reference = models['dynamic' if model == 'logits' else model]
    run(python(ONNX_DEMO, image, reference, '--out-file', str(native),
               *options))
    got, expected = cv2.imread(str(web)), cv2.imread(str(native))
    assert got.shape == expected.shape == (*size, 3)
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) > 100


@needs_browser
@pytest.mark.e2e
@pytest.mark.parametrize('model, image, message', [
    ('text', 'in.png', 'text.onnx is not an ONNX file'),
    ('no_metadata', 'in.png', 'not written by tools/deployment/'
     'pytorch2onnx.py'),
    ('fixed', 'in.png', 'exported for 96x128 images, in.png is 100x76: '
     'tick "resize"'),
    ('dynamic', 'text.png', 'cannot read image text.png'),
])
def test_check_reports_bad_input(models, tmp_path, model, image, message):
    smooth_image(tmp_path / 'in.png', 100, 76)
    (tmp_path / 'text.png').write_text('not an image')
    (tmp_path / 'text.onnx').write_text('not a model')
    path = models.get(model, str(tmp_path / f'{model}.onnx'))
    out = tmp_path / 'out.png'
    proc = web_check(path, str(tmp_path / image), out, check=False)
    assert proc.returncode == 1
    assert 'web_demo.py: the page says: ' in proc.stderr
    assert message in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not out.exists()


@needs_browser
@pytest.mark.e2e
def test_class_names_are_shown_as_text(models, tmp_path):
    image = smooth_image(tmp_path / 'in.png', 100, 76)
    proc = web_check(models['markup'], image, tmp_path / 'out.png')
    # The legend's text: markup inserted as HTML would have none for <img>
    # and lose the <b> tags.
    names = re.search(r'\(classes: (.*);', proc.stdout).group(1)
    assert f'{MARKUP}<b>disc</b>' in names.split(', ')


@needs_npm
def test_serve_gives_the_page_and_the_model_only(tmp_path):
    model = tmp_path / 'any.onnx'
    model.write_bytes(b'model bytes')
    server = subprocess.Popen(
        python(WEB_DEMO, '--serve', str(model), '--port', '0',
               '--serve-for', '60'),
        cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        address = re.search(r'(http://127\.0\.0\.1:\d+)/\?', line).group(1)
        page = urllib.request.urlopen(f'{address}/', timeout=10)
        assert page.headers['Cross-Origin-Opener-Policy'] == 'same-origin'
        assert page.headers['Cross-Origin-Embedder-Policy'] == 'require-corp'
        assert b'app.js' in page.read()
        assert urllib.request.urlopen(f'{address}/model.onnx',
                                      timeout=10).read() == b'model bytes'
        wasm = urllib.request.urlopen(
            f'{address}/node_modules/onnxruntime-web/dist/'
            'ort-wasm-simd-threaded.wasm', timeout=10)
        assert wasm.headers['Content-Type'] == 'application/wasm'
        for path in ('/package.json', '/node_modules/onnxruntime-web/'
                     'package.json', '/../web_demo.py', '/any.onnx',
                     '/%2e%2e/onnx_demo.py'):
            with pytest.raises(urllib.error.HTTPError, match='404'):
                urllib.request.urlopen(address + path, timeout=10)
    finally:
        server.kill()
        server.wait()


def test_fallback_palette_is_onnx_demos():
    text = (REPO / 'demo/web/fallback_palette.js').read_text()
    table = json.loads(text[text.index('= [') + 2:text.rindex(']') + 1]
                       .replace(',\n]', ']'))
    expected = np.random.default_rng(0).integers(0, 256, (256, 3))
    assert table == expected.tolist()


FAKE_CHROMIUM = '''#!{python}
"""Answers DevTools commands on fds 3 and 4 as Chromium's
--remote-debugging-pipe does, with the file descriptors it has open."""
import json
import os

buffer = b''
while True:
    chunk = os.read(3, 1 << 16)
    if not chunk:
        break
    *messages, buffer = (buffer + chunk).split(b'\\0')
    for message in messages:
        message = json.loads(message)
        fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))
        os.write(4, json.dumps({{'id': message['id'], 'result': {{
            'method': message['method'], 'fds': fds}}}}).encode() + b'\\0')
        if message['method'] == 'Browser.close':
            raise SystemExit
'''


def test_browser_gets_its_pipes_as_fds_3_and_4_without_preexec_fn(
        tmp_path, monkeypatch):
    """The pipes reach the browser as fds 3 and 4, and nothing else does,
    without a preexec_fn (unsafe while the demo's server thread runs)."""
    import sys
    import time
    chromium = load_script('demo/headless_chromium.py')
    fake = tmp_path / 'fake-chromium'
    fake.write_text(FAKE_CHROMIUM.format(python=sys.executable))
    fake.chmod(0o755)
    started = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(kwargs)
        return popen(*args, **kwargs)

    monkeypatch.setattr(chromium.subprocess, 'Popen', recording_popen)
    with chromium.HeadlessChromium(str(fake),
                                   time.monotonic() + 60) as browser:
        result = browser.call('Browser.getVersion', session=False)
    assert result['method'] == 'Browser.getVersion'
    # 0-2, the pipes, and the folder listing /proc/self/fd itself
    assert result['fds'][:5] == [0, 1, 2, 3, 4] and len(result['fds']) == 6
    assert started and started[0].get('preexec_fn') is None


def test_demo_helpers_raise_and_the_scripts_exit_with_one_line(
        tmp_path, monkeypatch):
    """The demo's helpers raise WebDemoError (web_benchmark.py imports
    them); each script turns it into one line and status 1."""
    monkeypatch.syspath_prepend(str(REPO / 'tools' / 'analysis_tools'))
    benchmark = load_script('tools/analysis_tools/web_benchmark.py')
    missing = str(tmp_path / 'none.onnx')
    with pytest.raises(benchmark.web_demo.WebDemoError,
                       match=r'npm ci|no model file'):
        benchmark.web_demo.routes(missing)
    proc = subprocess.run(python(WEB_DEMO, '--serve', missing), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith('web_demo.py: ')
    assert len(proc.stderr.strip().splitlines()) == 1
