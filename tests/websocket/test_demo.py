"""The demo page (contrib/web/index.html, served at GET / with demo = yes)
in a real headless Chromium (Debian's), driven over the DevTools
protocol: it connects over /lexbus, lists the services, and an emit from
the page's form reaches a unix-socket listener.  It loads nothing but
itself and its WebSocket (no CDN).  A screenshot is kept as a test
artifact: $LEXBUS_BUILDDIR/tests/websocket/demo.png."""
import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websockets

import lbtest
from lbtest import TestFailure, check, check_eq, test, wait_for
from wstest import BUILD, ws_bus

SRC = os.environ.get("LEXBUS_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class Chromium:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lexbus-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", "--user-data-dir=" + self.dir,
             "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = os.path.join(self.dir, "DevToolsActivePort")
        wait_for(lambda: os.path.exists(port_file) and len(open(port_file).read().split()) >= 2, 60,
                 what="Chromium's DevTools port")
        self.port = int(open(port_file).read().split()[0])

    def page_ws(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % self.port, timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        return pages[0]["webSocketDebuggerUrl"]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class CDP:
    """A minimal DevTools protocol client: commands and collected events."""

    def __init__(self, ws):
        self.ws, self.seq, self.waiting, self.events = ws, 0, {}, []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for raw in self.ws:
            m = json.loads(raw)
            if "id" in m and m["id"] in self.waiting:
                self.waiting.pop(m["id"]).set_result(m)
            elif "method" in m:
                self.events.append(m)

    async def send(self, method, **params):
        self.seq += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.seq] = fut
        await self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        m = await asyncio.wait_for(fut, 30)
        if "error" in m:
            raise TestFailure("%s: %r" % (method, m["error"]))
        return m["result"]

    async def js(self, expr):
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise TestFailure("page script failed: %r" % r["exceptionDetails"])
        return r["result"].get("value")

    async def until(self, expr, timeout=30.0, what=None):
        end = time.time() + timeout
        while time.time() < end:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.1)
        raise TestFailure("timed out waiting for %s" % (what or expr))


@test
def demo_page_in_headless_chromium():
    page = os.path.join(SRC, "contrib", "web", "index.html")
    with ws_bus(extra="demo = yes\ndemo_file = %s" % page) as bus:
        listener = bus.client("listener", subscribe=["demo:*"])
        chrome = Chromium()
        shot = os.path.join(BUILD, "tests", "websocket", "demo.png")
        try:
            async def drive():
                async with websockets.connect(chrome.page_ws(), max_size=None) as ws:
                    cdp = CDP(ws)
                    await cdp.send("Page.enable")
                    await cdp.send("Runtime.enable")
                    await cdp.send("Network.enable")
                    url = "http://127.0.0.1:%d/" % bus.port
                    await cdp.send("Page.navigate", url=url)
                    status = await cdp.until("document.querySelector('#status.ok') && "
                                             "document.querySelector('#status').textContent", what="the page to connect")
                    check(status.startswith("connected as demo-"), status)
                    me = status.split()[-1]
                    await cdp.until("!!document.querySelector('#services tr[data-name=\"listener\"]')",
                                    what="the unix listener in the service list")
                    await cdp.until("document.querySelectorAll('#stats .stat').length == 6", what="the stats")
                    await cdp.js("document.getElementById('emit-event').value = 'demo:from-chromium';"
                                 "document.getElementById('emit-payload').value = '{\"clicked\": true}';"
                                 "document.getElementById('emit-button').click(); true")
                    ev = await asyncio.get_running_loop().run_in_executor(None, listener.recv)
                    check_eq((ev["type"], ev["event"], ev["from"], ev["payload"]),
                             ("EVENT", "demo:from-chromium", me, {"clicked": True}), "the page's emit reached unix")
                    await cdp.until("document.getElementById('log').textContent.includes('delivered to')",
                                    what="the delivery ack on the page")
                    listener.send({"type": "EMIT", "event": "demo:to-page", "payload": {"hello": "page"}})
                    await cdp.until("document.getElementById('log').textContent.includes('demo:to-page')",
                                    what="an event from unix shown on the page")
                    await cdp.js("document.getElementById('call-service').value = 'lexbus';"
                                 "document.getElementById('call-method').value = 'ping';"
                                 "document.getElementById('call-button').click(); true")
                    await cdp.until("document.getElementById('log').textContent.includes('\"pong\":true')",
                                    what="the call's result")
                    shot_data = await cdp.send("Page.captureScreenshot", format="png")
                    os.makedirs(os.path.dirname(shot), exist_ok=True)
                    with open(shot, "wb") as f:
                        f.write(base64.b64decode(shot_data["data"]))
                    urls = [e["params"]["request"]["url"] for e in cdp.events
                            if e["method"] == "Network.requestWillBeSent"]
                    origin = "http://127.0.0.1:%d/" % bus.port
                    check(urls and all(u.startswith(origin) or u.startswith("ws://127.0.0.1:%d/" % bus.port)
                                       for u in urls), "the page loads only itself: %r" % urls)
                    errors = [e for e in cdp.events if e["method"] == "Runtime.exceptionThrown"]
                    check(not errors, "no script errors: %r" % errors)
                    cdp.reader.cancel()
            asyncio.run(drive())
        finally:
            chrome.close()
        check(os.path.getsize(shot) > 10000, "screenshot kept at %s" % shot)
        print("# screenshot: %s" % shot)


lbtest.main()
