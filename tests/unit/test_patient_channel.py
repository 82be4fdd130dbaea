"""wsgi.PatientChannel: waitress's event loop waits for a request thread's write instead of spinning."""
from __future__ import annotations

import socket
import threading
import time
import types

from waitress import adjustments

import wsgi


def channel_pair() -> tuple[wsgi.PatientChannel, socket.socket]:
    ours, theirs = socket.socketpair()
    server = types.SimpleNamespace(active_channels={})
    channel = wsgi.PatientChannel(server, ours, ("127.0.0.1", 0), adjustments.Adjustments(), map={})
    return channel, theirs


def test_the_loop_waits_for_a_request_thread_that_holds_the_output_and_then_sends_it(monkeypatch):
    """Stock waitress gives up at once while a request thread holds the output lock, so its loop polls
    again at once (a busy loop); this one waits for the lock and sends what is there. (The wait is
    lengthened here so that a loaded machine cannot outlast it; its bound has a test of its own.)"""
    monkeypatch.setattr(wsgi, "OUTBUF_WAIT_SECONDS", 2.0)
    channel, client = channel_pair()
    channel.requests = [object()]  # a request thread is running
    released = threading.Event()

    def request_thread() -> None:
        with channel.outbuf_lock:
            channel.outbufs[-1].append(b"HTTP/1.1 202 Accepted\r\n\r\n")
            channel.total_outbufs_len = len(b"HTTP/1.1 202 Accepted\r\n\r\n")
            released.wait(1)
            time.sleep(0.002)  # still holds the lock when the loop asks for it

    thread = threading.Thread(target=request_thread)
    thread.start()
    time.sleep(0.01)
    released.set()
    channel.handle_write()  # what waitress's loop calls when the connection is writable
    thread.join(1)
    assert channel.total_outbufs_len == 0
    assert client.recv(100) == b"HTTP/1.1 202 Accepted\r\n\r\n"


def test_the_wait_is_bounded_when_the_request_thread_keeps_the_lock():
    channel, _client = channel_pair()
    channel.requests = [object()]
    holding, done = threading.Event(), threading.Event()

    def request_thread() -> None:
        with channel.outbuf_lock:
            holding.set()
            done.wait(2)

    thread = threading.Thread(target=request_thread)
    thread.start()
    holding.wait(1)
    began = time.monotonic()
    channel._flush_some_if_lockable()
    waited = time.monotonic() - began
    done.set()
    thread.join(1)
    assert wsgi.OUTBUF_WAIT_SECONDS <= waited + 0.001 < 0.5


def test_serve_uses_it(monkeypatch):
    """Every connection the server accepts is a PatientChannel."""
    created = {}

    def fake_loop(**kwargs):
        created["classes"] = [item.channel_class for item in kwargs["map"].values() if hasattr(item, "channel_class")]
        raise KeyboardInterrupt  # leave serve()

    monkeypatch.setattr(wsgi.wasyncore, "loop", fake_loop)
    try:
        wsgi.serve(lambda environ, start_response: [], host="127.0.0.1", port=0, grace=0.1)
    except KeyboardInterrupt:
        pass
    assert created["classes"] and all(cls is wsgi.PatientChannel for cls in created["classes"])
