"""Image → labels in the browser page (onnxruntime-web, WASM, headless
Chromium) against native ONNX Runtime, for one config exported to ONNX.

    python tools/analysis_tools/web_benchmark.py CONFIG [--shape 512 512]
        [--threads 1 2] [--runs 5] [--warmup 1] [--rounds 3]

The config is exported once with random weights, labels output only, at
``--shape`` (in its own process). Cases: the page of demo/web_demo.py in
headless Chromium with each WASM thread count (the page is cross-origin
isolated, so threads work), and native ONNX Runtime (CPU) with each thread
count. Every case is a fresh process (a new browser, or a new Python) that
loads the model and times ``--runs`` calls after ``--warmup``; ``--rounds``
interleaves the cases. Both sides time the ``session.run`` call alone, on
the same random image: the page's ``performance.now()`` around it, Python's
``perf_counter``. Prints the median of all timed calls per case.
Needs Chromium and the page's npm packages (see demo/web_demo.py).
"""
import argparse
import importlib.util
import os.path as osp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Tuple
from urllib.parse import urlencode

from measuring import run_in_fresh_process, time_steps

DEMO = Path(__file__).resolve().parents[2] / 'demo'


def demo_script(name: str) -> ModuleType:
    """demo/<name>.py as the module ``name``. The demo scripts import one
    another by name, as Python does for a script run from demo/; loading
    them by file keeps demo/ off ``sys.path``, where its other scripts
    would shadow installed modules."""
    spec = importlib.util.spec_from_file_location(name, DEMO / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


headless_chromium = demo_script('headless_chromium')
web_demo = demo_script('web_demo')
HeadlessChromium, find_chromium = (headless_chromium.HeadlessChromium,
                                   headless_chromium.find_chromium)
MODEL_URL, serving = web_demo.MODEL_URL, web_demo.serving

Case = Tuple[str, int]  # (runtime, threads)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512],
                        metavar=('H', 'W'), help='input size')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                        help='thread counts, for both runtimes')
    parser.add_argument('--runs', type=int, default=5,
                        help='timed calls per process')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed calls before them')
    parser.add_argument('--rounds', type=int, default=3,
                        help='run every case this many times, interleaved')
    parser.add_argument('--timeout', type=float, default=600,
                        help='seconds one browser case may take')
    return parser.parse_args()


def export(config: str, shape: List[int], path: str, queue) -> None:
    from cgrseg.apis import init_segmentor
    from cgrseg.deploy import DeploySegmentor
    from cgrseg.deploy.onnx_export import export_onnx
    segmentor = init_segmentor(config)
    export_onnx(DeploySegmentor(segmentor, outputs=('labels', )), path,
                tuple(shape), metadata=segmentor.dataset_meta)
    queue.put(path)


def write_random_image(path: str, shape: List[int]) -> str:
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    cv2.imwrite(path, rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    return path


def native_times(model: str, image: str, threads: int, runs: int,
                 warmup: int, queue) -> None:
    """Runs in a fresh process: ONNX Runtime's session.run on the image."""
    import cv2
    import numpy as np
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, options,
                                   providers=['CPUExecutionProvider'])
    batch = cv2.imread(image).transpose(2, 0, 1)[None].astype(np.float32)
    queue.put(time_steps(lambda: session.run(['labels'], {'images': batch}),
                         runs, warmup, cuda=False))


def wasm_times(model: str, image: str, threads: int, args) -> List[float]:
    """A fresh headless Chromium: the page segments the image
    warmup + runs times; the page's inference times of the timed ones."""
    query = urlencode(dict(model=MODEL_URL[1:], threads=threads))
    deadline = time.monotonic() + args.timeout
    with serving(model, 0) as address, HeadlessChromium(
            find_chromium(), deadline) as chromium:
        chromium.open(f'{address}/?{query}')
        status = chromium.evaluate('window.cgrsegDemo.whenSettled(1)')
        times = []
        for i in range(args.warmup + args.runs):
            if status['error']:
                raise SystemExit(f'web_benchmark.py: {status["error"]}')
            # A file input fires no change event for the file it holds.
            chromium.evaluate("document.getElementById('image-input')"
                              ".value = ''")
            chromium.set_file_input('#image-input', image)
            status = chromium.evaluate(
                f'window.cgrsegDemo.whenSettled({i + 2})')
            if i >= args.warmup:
                times.append(status['inferenceMs'] / 1000)
        if status['threads'] != threads:
            raise SystemExit(f'web_benchmark.py: the page ran '
                             f'{status["threads"]} threads, not {threads}.')
    return times


def main() -> None:
    try:
        benchmark(parse_args())
    except web_demo.WebDemoError as err:
        sys.exit(f'web_benchmark.py: {err}')


def benchmark(args: argparse.Namespace) -> None:
    if find_chromium() is None:
        raise SystemExit('web_benchmark.py: needs Chromium '
                         '(apt-get install chromium).')
    cases: List[Case] = [(runtime, threads) for threads in args.threads
                         for runtime in ('wasm', 'native')]
    times: Dict[Case, List[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        model = run_in_fresh_process(export, args.config, args.shape,
                                     osp.join(tmp, 'model.onnx'))
        image = write_random_image(osp.join(tmp, 'image.png'), args.shape)
        for _ in range(args.rounds):
            for runtime, threads in cases:
                if runtime == 'wasm':
                    found = wasm_times(model, image, threads, args)
                else:
                    found = run_in_fresh_process(native_times, model, image,
                                                 threads, args.runs,
                                                 args.warmup)
                times[runtime, threads] += found
    print(f'{osp.basename(args.config)}, image -> labels at '
          f'{args.shape[0]}x{args.shape[1]}, {args.rounds} rounds x '
          f'{args.runs} calls after {args.warmup} warm-up')
    for (runtime, threads), found in times.items():
        name = ('onnxruntime-web WASM (headless Chromium)'
                if runtime == 'wasm' else 'ONNX Runtime (native)')
        print(f'{name}, {threads} thread(s): median '
              f'{1000 * statistics.median(found):.0f} ms (min '
              f'{1000 * min(found):.0f}, max {1000 * max(found):.0f})')


if __name__ == '__main__':
    main()
