"""Headless Chromium driven over the DevTools protocol on a pipe.

Chromium started with ``--remote-debugging-pipe`` reads protocol commands
from its file descriptor 3 and writes replies and events to 4, as JSON
messages ended by NUL bytes: no WebSocket library is needed. Every wait has
a deadline; leaving the ``with`` block closes the browser (killing its
process group if it does not exit) and deletes its fresh profile.
"""
import base64
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

# Headless, and nothing that phones home: the network outside 127.0.0.1
# may be closed, and connections it refuses would only add noise.
FLAGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
    '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    '--remote-debugging-pipe', '--window-size=1280,800', 'about:blank'
]
NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'chrome')
# argv: the commands pipe's fd, the replies pipe's fd, Chromium's argv.
AS_FDS_3_AND_4 = """
import os, sys
commands, replies = map(int, sys.argv[1:3])
os.dup2(commands, 3)
os.dup2(replies, 4)
os.close(commands)
os.close(replies)
os.execv(sys.argv[3], sys.argv[3:])
"""


class BrowserError(RuntimeError):
    """The browser failed, timed out, or a script in the page threw."""


def find_chromium() -> Optional[str]:
    """``$CHROMIUM``, else the first Chromium on PATH, else None."""
    for name in (os.environ.get('CHROMIUM'), *NAMES):
        path = name and shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless Chromium with one page; ``deadline`` (time.monotonic())
    bounds every call."""

    def __init__(self, executable: str, deadline: float):
        self.executable = executable
        self.deadline = deadline
        self.replies: Dict[int, dict] = {}
        self.events: List[dict] = []
        self.messages: 'queue.Queue[Optional[dict]]' = queue.Queue()
        self.next_id = 0
        self.session: Optional[str] = None

    # --- process ----------------------------------------------------------

    def __enter__(self) -> 'HeadlessChromium':
        self.profile = tempfile.mkdtemp(prefix='cgrseg-chromium-')
        # Chromium's --remote-debugging-pipe reads commands from fd 3 and
        # writes replies to fd 4. A small Python trampoline moves the pipes
        # there in the child and execs Chromium, rather than a preexec_fn,
        # which Python's docs call unsafe while threads run (the demo's
        # server thread). Via high numbers: the pipes may be 3 or 4.
        commands_read, self.commands = os.pipe()
        self.replies_fd, replies_write = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
                for fd in (commands_read, replies_write)]
        os.close(commands_read)
        os.close(replies_write)
        try:
            self.process = subprocess.Popen(
                [sys.executable, '-c', AS_FDS_3_AND_4, *map(str, high),
                 self.executable, f'--user-data-dir={self.profile}', *FLAGS],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=high,
                start_new_session=True)
        finally:
            for fd in high:
                os.close(fd)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.deadline = min(self.deadline, time.monotonic() + 5)
            self.call('Browser.close', session=False)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.commands)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self) -> None:
        buffer = b''
        with os.fdopen(self.replies_fd, 'rb', buffering=0) as pipe:
            while True:
                chunk = pipe.read(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                *complete, buffer = buffer.split(b'\0')
                for message in complete:
                    self.messages.put(json.loads(message))
        self.messages.put(None)  # the browser closed the pipe

    # --- protocol -----------------------------------------------------------

    def _next_message(self) -> dict:
        remaining = self.deadline - time.monotonic()
        try:
            message = self.messages.get(timeout=max(remaining, 0))
        except queue.Empty:
            raise BrowserError('timed out') from None
        if message is None:
            raise BrowserError(
                f'Chromium exited (status {self.process.poll()})')
        return message

    def call(self, method: str, session: bool = True, **params: Any) -> dict:
        """Send one command (to the page's session unless ``session`` is
        False) and return its result."""
        self.next_id += 1
        message = {'id': self.next_id, 'method': method, 'params': params}
        if session and self.session:
            message['sessionId'] = self.session
        os.write(self.commands, json.dumps(message).encode() + b'\0')
        while self.next_id not in self.replies:
            reply = self._next_message()
            if 'id' in reply:
                self.replies[reply['id']] = reply
            else:
                self.events.append(reply)
        reply = self.replies.pop(self.next_id)
        if 'error' in reply:
            raise BrowserError(f'{method}: {reply["error"].get("message")}')
        return reply['result']

    def wait_for_event(self, method: str) -> dict:
        while True:
            for event in self.events:
                if event['method'] == method:
                    self.events.remove(event)
                    return event['params']
            message = self._next_message()
            if 'method' in message:
                self.events.append(message)

    # --- the page -----------------------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url`` in a new tab and wait for its load event."""
        target = self.call('Target.createTarget', session=False,
                           url='about:blank')['targetId']
        self.session = self.call('Target.attachToTarget', session=False,
                                 targetId=target, flatten=True)['sessionId']
        self.call('Page.enable')
        self.call('Runtime.enable')
        self.call('Page.navigate', url=url)
        self.wait_for_event('Page.loadEventFired')

    def page_errors(self) -> List[str]:
        """Uncaught exceptions and console errors of the page so far."""
        errors = []
        for event in self.events:
            params = event.get('params', {})
            if event['method'] == 'Runtime.exceptionThrown':
                details = params['exceptionDetails']
                errors.append(details.get('exception', {}).get(
                    'description', details.get('text', '')))
            elif (event['method'] == 'Runtime.consoleAPICalled'
                  and params.get('type') == 'error'):
                errors.append(' '.join(
                    str(arg.get('value', arg.get('description', '')))
                    for arg in params.get('args', [])))
        return errors

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if a promise)."""
        reply = self.call('Runtime.evaluate', expression=expression,
                          awaitPromise=True, returnByValue=True)
        if 'exceptionDetails' in reply:
            details = reply['exceptionDetails']
            raise BrowserError(details.get('exception', {}).get(
                'description', details.get('text', 'exception')))
        return reply['result'].get('value')

    def set_file_input(self, selector: str, path: str) -> None:
        """Choose ``path`` in the file input ``selector``, as a user does
        (the page gets its change event)."""
        root = self.call('DOM.getDocument')['root']['nodeId']
        node = self.call('DOM.querySelector', nodeId=root,
                         selector=selector)['nodeId']
        self.call('DOM.setFileInputFiles', nodeId=node,
                  files=[os.path.abspath(path)])

    def screenshot(self, path: str) -> None:
        """Write the whole page as a PNG."""
        data = self.call('Page.captureScreenshot', format='png',
                         captureBeyondViewport=True)['data']
        with open(path, 'wb') as out:
            out.write(base64.b64decode(data))
