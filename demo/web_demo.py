"""Segment images in the browser with an exported ONNX model (the page in
demo/web, run by onnxruntime-web).

    python demo/web_demo.py --serve MODEL.onnx [--port 8000]
    python demo/web_demo.py --check MODEL.onnx IMAGE --out-file OUT.png
        [--resize] [--opacity 0.5] [--screenshot PAGE.png]

--serve serves the page, its onnxruntime-web files and MODEL.onnx (nothing
else) on 127.0.0.1 with the cross-origin isolation headers (COOP/COEP) that
multithreaded WebAssembly needs, and prints the address to open. --check
opens that page in headless Chromium, gives it IMAGE through its file
picker and writes the overlay the page computed: the same picture as
demo/onnx_demo.py's. Needs the page's npm packages (`npm ci` in demo/web)
and, for --check, Chromium. Standard library, numpy and OpenCV only.
"""
import argparse
import base64
import contextlib
import http.server
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator
from urllib.parse import urlencode, urlsplit

import cv2
import numpy as np
from headless_chromium import BrowserError, HeadlessChromium, find_chromium

PAGE = Path(__file__).resolve().parent / 'web'
ORT_DIST = 'node_modules/onnxruntime-web/dist'
# What the page imports from onnxruntime-web (its WebAssembly build).
ORT_FILES = ('ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs',
             'ort-wasm-simd-threaded.wasm')
MODEL_URL = '/model.onnx'
CONTENT_TYPES = {
    '.html': 'text/html; charset=utf-8', '.css': 'text/css',
    '.js': 'text/javascript', '.mjs': 'text/javascript',
    '.wasm': 'application/wasm', '.onnx': 'application/octet-stream'
}
ISOLATION_HEADERS = {
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
}


class WebDemoError(RuntimeError):
    """Bad input or a missing part, in one line: :func:`main` prints it and
    exits with status 1; a program that imports this module (e.g.
    tools/analysis_tools/web_benchmark.py) catches it."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument('--serve', metavar='MODEL', help='serve the page '
                      'with this ONNX file (from pytorch2onnx.py)')
    mode.add_argument('--check', nargs=2, metavar=('MODEL', 'IMAGE'),
                      help='segment IMAGE with MODEL in headless Chromium')
    parser.add_argument('--port', type=int, default=8000,
                        help='--serve: port on 127.0.0.1 (0: any free one)')
    parser.add_argument('--serve-for', type=float, default=0,
                        help='--serve: stop after this many seconds (0: '
                        'at Ctrl-C)')
    parser.add_argument('--out-file', default='result.png',
                        help='--check: the overlay PNG to write')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='--check: weight of the class colours')
    parser.add_argument('--resize', action='store_true',
                        help="--check: resize the image to a fixed-size "
                        "model's input size")
    parser.add_argument('--threads', type=int, default=0,
                        help='--check: WASM threads (0: the page default, '
                        'up to 4)')
    parser.add_argument('--screenshot', help='--check: also write the '
                        'page as a PNG')
    parser.add_argument('--timeout', type=float, default=180,
                        help='--check: seconds before giving up')
    return parser.parse_args()


def routes(model: str) -> Dict[str, Path]:
    """URL path → file: the page, its onnxruntime-web files, the model."""
    missing = [name for name in ORT_FILES if not (PAGE / ORT_DIST /
                                                  name).is_file()]
    if missing:
        raise WebDemoError(
            f'{PAGE / ORT_DIST} lacks {", ".join(missing)}: install the '
            f"page's npm packages with `npm ci` in {PAGE} (Node.js 18+).")
    if not os.path.isfile(model):
        raise WebDemoError(f'no model file {model!r}.')
    table = {'/': PAGE / 'index.html', MODEL_URL: Path(model)}
    for pattern in ('*.html', '*.js', '*.css'):
        table.update({f'/{path.name}': path for path in PAGE.glob(pattern)})
    table.update({f'/{ORT_DIST}/{name}': PAGE / ORT_DIST / name
                  for name in ORT_FILES})
    return table


class PageHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of the routed files only, with COOP/COEP; 404 otherwise."""
    routes: Dict[str, Path] = {}

    def do_HEAD(self) -> None:
        self.send(body=False)

    def do_GET(self) -> None:
        self.send(body=True)

    def send(self, body: bool) -> None:
        path = self.routes.get(urlsplit(self.path).path)
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Type', CONTENT_TYPES.get(
            path.suffix, 'application/octet-stream'))
        self.send_header('Content-Length', str(path.stat().st_size))
        self.send_header('Cache-Control', 'no-store')
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            with open(path, 'rb') as source:
                shutil.copyfileobj(source, self.wfile)

    def log_message(self, format: str, *args) -> None:
        pass  # the console shows the address, not every request


@contextlib.contextmanager
def serving(model: str, port: int) -> Iterator[str]:
    """Serve the page for ``model`` on 127.0.0.1 in a thread; yields its
    address."""
    handler = type('Handler', (PageHandler, ), {'routes': routes(model)})
    try:
        server = http.server.ThreadingHTTPServer(('127.0.0.1', port), handler)
    except OSError as err:
        raise WebDemoError(f'cannot listen on 127.0.0.1:{port}: '
                           f'{err.strerror}; choose another --port.') from err
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def serve(args: argparse.Namespace) -> None:
    with serving(args.serve, args.port) as address:
        query = urlencode(dict(model=MODEL_URL[1:],
                               name=Path(args.serve).name))
        print(f'Serving {args.serve}: open {address}/?{query} '
              f'(Ctrl-C stops)', flush=True)
        try:
            if args.serve_for:
                time.sleep(args.serve_for)
            else:
                threading.Event().wait()
        except KeyboardInterrupt:
            pass


def run_page(args: argparse.Namespace, model: str, image: str,
             browser: str) -> Dict[str, object]:
    """Segment ``image`` in the page; returns the page's status with the
    overlay as a PNG data URL (or its error)."""
    query = urlencode(dict(model=MODEL_URL[1:], name=Path(model).name,
                           opacity=args.opacity,
                           resize=int(args.resize), threads=args.threads))
    deadline = time.monotonic() + args.timeout
    with serving(model, 0) as address, HeadlessChromium(
            browser, deadline) as chromium:
        try:
            chromium.open(f'{address}/?{query}')
            status = chromium.evaluate('window.cgrsegDemo.whenSettled(1)')
            if not status['error']:
                chromium.set_file_input('#image-input', image)
                status = chromium.evaluate(
                    'window.cgrsegDemo.whenSettled(2)')
            if args.screenshot:
                chromium.screenshot(args.screenshot)
            if not status['error']:
                status['overlay'] = chromium.evaluate(
                    "document.getElementById('overlay').toDataURL()")
        except BrowserError as err:
            errors = '; '.join(chromium.page_errors()) or 'none'
            raise WebDemoError(f'the page did not finish: {err} (its '
                               f'errors: {errors}).') from err
    return status


def check(args: argparse.Namespace) -> None:
    model, image = args.check
    if not os.path.isfile(image):
        raise WebDemoError(f'cannot read image {image!r} (missing).')
    browser = find_chromium()
    if browser is None:
        raise WebDemoError('no Chromium found (set $CHROMIUM, or install it: '
                           'apt-get install chromium).')
    status = run_page(args, model, image, browser)
    if status['error']:
        raise WebDemoError(f'the page says: {status["error"]}')
    png = np.frombuffer(
        base64.b64decode(status['overlay'].split(',', 1)[1]),
        np.uint8)
    if not cv2.imwrite(args.out_file, cv2.imdecode(png, cv2.IMREAD_COLOR)):
        raise WebDemoError(f'cannot write {args.out_file!r}.')
    print(f'{image} -> {args.out_file} (classes: '
          f'{", ".join(status["classesPresent"])}; inference '
          f'{status["inferenceMs"]:.0f} ms, onnxruntime-web WASM, '
          f'{status["threads"]} thread(s))')


def main() -> None:
    args = parse_args()
    try:
        if args.serve:
            serve(args)
        else:
            check(args)
    except WebDemoError as err:
        sys.exit(f'web_demo.py: {err}')


if __name__ == '__main__':
    main()
